"""The static anti-cheat check of a candidate's forward."""
import textwrap

import pytest

from tilekit.bench.anticheat import check_candidate_file, check_candidate_source
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
    assert len(violations) == 1 and "never calls a tilekit op" in violations[0]
    # An external (non-tilekit) candidate may use its own kernels...
    assert check(body, require_tilekit_op=None) == []
    # ...but importing tilekit makes it a tilekit candidate.
    assert "never calls a tilekit op" in check(body, header="import torch\nimport torch.nn as nn\nimport tilekit.ops\n",
                                                require_tilekit_op=None)[0]


def test_malformed_candidates_are_reported():
    assert "no class ModelNew" in check("x = 1\n")[0]
    assert "no forward" in check("class ModelNew(nn.Module):\n    pass\n")[0]
    assert "does not parse" in check("def (:\n")[0]
