"""The static anti-cheat check of a candidate's forward."""
import textwrap

import pytest

from tilekit.bench.anticheat import check_candidate_file, check_candidate_source, check_source
from tilekit.bench.discovery import TILEKIT_CANDIDATES_DIR


def check(body: str, header: str = "import torch\nimport torch.nn as nn\n", require_tilekit_op=True):
    return check_candidate_source(header + textwrap.dedent(body), "cand.py", require_tilekit_op=require_tilekit_op)


CLEAN = """
class ModelNew(nn.Module):
    def forward(self, a, b):
        return torch.ops.tilekit.matmul(a, b)
"""


def test_clean_tilekit_candidate_passes():
    assert check(CLEAN) == []


def test_shipped_tilekit_candidates_pass():
    candidates = sorted(TILEKIT_CANDIDATES_DIR.rglob("*.py"))
    assert candidates, "tilekit ships candidates"
    for path in candidates:
        assert check_candidate_file(path, require_tilekit_op=True) == [], path


def test_try_except_fallback_is_flagged():
    violations = check("""
        class ModelNew(nn.Module):
            def forward(self, a, b):
                try:
                    return torch.ops.tilekit.matmul(a, b)
                except Exception:
                    return a.float() + b.float()
        """)
    assert len(violations) == 1
    assert "try/except" in violations[0] and "line 6" in violations[0]


def test_torch_matmul_in_forward_is_flagged():
    violations = check("""
        class ModelNew(nn.Module):
            def forward(self, a, b):
                c = torch.ops.tilekit.matmul(a, b)
                return torch.matmul(a, b)
        """)
    assert violations == ["ModelNew.forward line 7: uses torch.matmul (a matmul op)"]


@pytest.mark.parametrize("expression,needle", [
    ("a @ b", "@"),
    ("a.mm(b)", "mm"),
    ("torch.bmm(a, b)", "torch.bmm"),
    ("torch.einsum('ij,jk->ik', a, b)", "einsum"),
    ("torch.addmm(a, a, b)", "addmm"),
    ("torch.nn.functional.linear(a, b)", "linear"),
    ("torch.ops.aten.mm.default(a, b)", "torch.ops.aten.mm"),
    ("a.softmax(-1)", "softmax"),
    ("torch.linalg.vecdot(a, b)", "torch.linalg"),
])
def test_forbidden_compute_is_flagged(expression, needle):
    violations = check(f"""
        class ModelNew(nn.Module):
            def forward(self, a, b):
                torch.ops.tilekit.matmul(a, b)
                return {expression}
        """)
    assert len(violations) == 1 and needle in violations[0], violations


def test_aliases_do_not_hide_forbidden_calls():
    header = ("import torch\nimport torch.nn as nn\nfrom torch.nn import functional as Fn\n"
              "from torch import matmul as mul\nmm = torch.mm\n")
    violations = check("""
        class ModelNew(nn.Module):
            def forward(self, a, b):
                x = Fn.softmax(a, dim=-1)
                y = mul(a, b)
                z = mm(a, b)
                return torch.ops.tilekit.matmul(x, y) + z
        """, header=header)
    assert [v.split(":")[0] for v in violations] == ["ModelNew.forward line 9", "ModelNew.forward line 10",
                                                     "ModelNew.forward line 11"]
    assert "torch.nn.functional" in violations[0] and "torch.matmul" in violations[1] and "torch.mm" in violations[2]


def test_helpers_called_from_forward_are_checked():
    violations = check("""
        def helper(a, b):
            return torch.matmul(a, b)

        class ModelNew(nn.Module):
            def __init__(self):
                super().__init__()
                self.proj = nn.Linear(4, 4)

            def _inner(self, a):
                try:
                    return a
                except RuntimeError:
                    return a

            def forward(self, a, b):
                return torch.ops.tilekit.matmul(self._inner(a), helper(a, b)) + self.proj(a)
        """)
    joined = "\n".join(violations)
    assert "helper line" in joined and "torch.matmul" in joined
    assert "ModelNew._inner" in joined and "try/except" in joined
    assert "torch.nn.Linear" in joined


def test_reference_model_and_dynamic_lookups_are_flagged():
    violations = check("""
        class ModelNew(nn.Module):
            def forward(self, a, b):
                torch.ops.tilekit.matmul(a, b)
                op = getattr(torch, "mat" + "mul")
                return Model()(a, b)
        """)
    joined = "\n".join(violations)
    assert "getattr" in joined and "reference Model" in joined


def test_tilekit_op_is_required_for_tilekit_candidates():
    body = """
        class ModelNew(nn.Module):
            def forward(self, x):
                return x.exp() / x.exp().sum(-1, keepdim=True)
        """
    violations = check(body)
    assert len(violations) == 2 and "never calls a tilekit op" in violations[1]
    assert ".exp()" in violations[0]                   # and the allowlist names the compute
    # An external (non-tilekit) candidate may use its own kernels...
    assert check(body, require_tilekit_op=None) == []
    # ...but importing tilekit makes it a tilekit candidate.
    assert "never calls a tilekit op" in check(body, header="import torch\nimport torch.nn as nn\nimport tilekit.ops\n",
                                                require_tilekit_op=None)[-1]


def test_malformed_candidates_are_reported():
    assert "no class ModelNew" in check("x = 1\n")[0]
    assert "no forward" in check("class ModelNew(nn.Module):\n    pass\n")[0]
    assert "does not parse" in check("def (:\n")[0]


@pytest.mark.parametrize("expression,needle", [
    ("a.__matmul__(b)", "__matmul__"),
    ("b.__rmatmul__(a.T)", "__rmatmul__"),
    ("torch.Tensor.__matmul__(a, b)", "__matmul__"),
])
def test_dunder_matmul_calls_are_flagged_for_any_candidate(expression, needle):
    violations = check(f"""
        class ModelNew(nn.Module):
            def forward(self, a, b):
                return {expression}
        """, require_tilekit_op=None)
    assert len(violations) == 1 and needle in violations[0], violations


@pytest.mark.parametrize("init", [
    "self.f = lambda a, b: torch.matmul(a, b)",
    "def inner(a, b):\n                    return torch.mm(a, b)\n                self.f = inner",
    "self.f = functools.partial(torch.matmul)",
])
def test_code_stored_on_self_in_init_is_followed(init):
    violations = check(f"""
        import functools

        class ModelNew(nn.Module):
            def __init__(self):
                super().__init__()
                {init}

            def forward(self, a, b):
                return self.f(a, b)
        """, require_tilekit_op=None)
    assert violations and all(("matmul" in v or "torch.mm" in v) for v in violations), violations


def test_parameters_built_in_init_are_not_followed():
    # Reading self.weight does not make its initialiser (torch.randn) part of the kernel.
    assert check("""
        class ModelNew(nn.Module):
            def __init__(self):
                super().__init__()
                self.weight = nn.Parameter(torch.randn(4, 4))

            def forward(self, a):
                return torch.ops.tilekit.matmul(a, self.weight.t().contiguous())
        """) == []


@pytest.mark.parametrize("statement,needle", [
    ("statistics.median = lambda data: 1e-6", "patches statistics.median"),
    ("time.perf_counter = lambda: 0.0", "patches time.perf_counter"),
    ("torch.Tensor.__matmul__ = lambda a, b: a", "patches torch.Tensor.__matmul__"),
    ("torch.library.impl('tilekit::matmul', 'CPU')(torch.mm)", "registers a kernel in the tilekit namespace"),
    ("LIB = torch.library.Library('tilekit', 'IMPL')", "registers a kernel in the tilekit namespace"),
    ("PRECOMPUTED = torch.matmul(torch.ones(2, 2), torch.ones(2, 2))", "module level line"),
    ("exec('import torch')", "dynamic lookup exec()"),
])
def test_module_level_statements_are_checked(statement, needle):
    header = "import statistics\nimport time\nimport torch\nimport torch.nn as nn\n"
    violations = check(CLEAN, header=header + statement + "\n")
    assert any(needle in v for v in violations), violations


def test_module_level_lambda_used_by_forward_is_followed():
    violations = check("""
        mm = lambda a, b: a @ b

        class ModelNew(nn.Module):
            def forward(self, a, b):
                torch.ops.tilekit.matmul(a, b)
                return mm(a, b)
        """)
    assert any("mm line 4" in v and "@" in v for v in violations), violations


@pytest.mark.parametrize("expression,needle", [
    ("torch.cumsum(a, 0)", "torch.cumsum"),
    ("torch.topk(a, 2).values", "torch.topk"),
    ("a.topk(2)", ".topk()"),
    ("a.index_add_(0, torch.zeros(1, dtype=torch.long), b)", ".index_add_()"),
    ("torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(a, a, a)", "torch.ops.aten"),
    ("a.exp().sum(-1)", ".sum()"),
])
def test_strict_allowlist_names_any_other_torch_compute(expression, needle):
    body = f"""
        class ModelNew(nn.Module):
            def forward(self, a, b):
                c = torch.ops.tilekit.matmul(a, b)     # one token tilekit op
                return {expression}
        """
    violations = check(body)
    assert len(violations) == 1 and needle in violations[0] and "--policy strict" in violations[0], violations
    # KernelBench's policy warns instead; an external candidate (no tilekit) is not held to the allowlist.
    verdict = check_source(textwrap.dedent("import torch\nimport torch.nn as nn\n" + textwrap.dedent(body)),
                           "cand.py", require_tilekit_op=True, policy="kernelbench")
    assert verdict.violations == [] and needle in verdict.warnings[0]
    assert check(body.replace("c = torch.ops.tilekit.matmul(a, b)     # one token tilekit op", "pass"),
                 require_tilekit_op=None) == []


def test_strict_allowlist_lets_allocation_views_and_shapes_through():
    assert check("""
        class ModelNew(nn.Module):
            def forward(self, x, w):
                rows, cols = x.shape
                flat = x.reshape(-1, cols).contiguous().to(torch.float32)
                out = torch.empty((rows, w.shape[1]), dtype=x.dtype, device=x.device)
                out.copy_(torch.ops.tilekit.matmul(flat, w.t().contiguous().T).view(rows, -1))
                return out.unsqueeze(0).squeeze(0), torch.zeros_like(out).numel()
        """) == []


def test_kernelbench_policy_keeps_structural_cheats():
    body = """
        class ModelNew(nn.Module):
            def __init__(self):
                super().__init__()
                self.proj = nn.Linear(4, 4)

            def forward(self, a):
                try:
                    return self.proj(a)
                except RuntimeError:
                    return Model()(a)
        """
    verdict = check_source("import torch\nimport torch.nn as nn\n" + textwrap.dedent(body), "cand.py",
                           require_tilekit_op=None, policy="kernelbench")
    assert any("torch.nn.Linear" in w for w in verdict.warnings)
    assert any("try/except" in v for v in verdict.violations) and any("reference Model" in v
                                                                    for v in verdict.violations)
