"""A tuning job's flags reach the trial: its inputs, its launch, its reference and its default config, and the
op looks its config up with the call's flags."""
import pytest
import torch

from tilekit.autotune.protocol import kernels
from tilekit.autotune.worker import run_request


def _gate(kernel_id, shape, flags, tmp_path, dtype="float32"):
    req = {"kernel": kernel_id, "shape": list(shape), "flags": flags, "dtype": dtype, "backend": "reference",
           "device": "cpu", "seed": 3, "gate_only": True, "timing_lock": str(tmp_path / "lock"),
           "config": kernels()[kernel_id].default_config_for(shape, flags, getattr(torch, dtype),
                                                            torch.device("cpu"))}
    return run_request(req)


@pytest.mark.parametrize("kernel_id", ["attention.fwd", "attention.bwd_dq"])
def test_a_causal_job_gates_the_causal_kernel(kernel_id, tmp_path):
    shape = (1, 2, 1, 19, 27, 16)
    for flags in ({}, {"causal": "1"}, {"causal": "1", "window": "5:-1"}):
        assert _gate(kernel_id, shape, flags, tmp_path)["status"] == "ok", flags
    # The flags change what is computed: a causal launch judged by the full-attention reference fails.
    tk_kernel = kernels()[kernel_id]
    causal = {"causal": "1"}
    inputs = tk_kernel.inputs_for(shape, causal, torch.float32, torch.Generator().manual_seed(0))
    full = tk_kernel.reference_for(inputs, {})
    masked = tk_kernel.reference_for(inputs, causal)
    assert (full.double() - masked.double()).abs().max() > 1e-2


@pytest.mark.parametrize("flags", [{"fmt": "int3", "group": "32"}, {"fmt": "mxfp4"}, {"fmt": "int5", "group": "-1"}])
def test_a_lowbit_job_quantizes_to_its_format(flags, tmp_path):
    assert _gate("lowbit_linear.gemv", (3, 40, 64), flags, tmp_path)["status"] == "ok"


def test_flags_are_canonical_so_job_and_call_key_one_entry():
    gemv = kernels()["lowbit_linear.gemv"]
    assert gemv.parse_shape("3x64x64,fmt=mxfp4") == ((3, 64, 64), (("fmt", "mxfp4"), ("group", "32")))
    assert gemv.canonical_flags(()) == (("fmt", "int4"), ("group", "128"))
    with pytest.raises(ValueError, match="unknown flag fmt='int9'"):
        gemv.canonical_flags({"fmt": "int9"})
    with pytest.raises(ValueError, match="unknown flag.*dtype"):
        gemv.parse_shape("1,64,64,dtype=x")
    attn = kernels()["attention.fwd"]
    assert attn.parse_shape("1,2,1,8,8,16,window=4:-1,causal=1")[1] == (("causal", "1"), ("window", "4:-1"))


def test_the_op_looks_up_with_the_calls_flags(monkeypatch):
    from tilekit.ops import dispatch
    from tilekit.ops.attention import op as attention_op
    from tilekit.ops.lowbit import op as lowbit_op
    asked = []
    monkeypatch.setattr(dispatch, "_config_provider", lambda kid, shape, *rest: asked.append((kid, shape)))
    q = torch.randn(1, 2, 5, 16)
    k = v = torch.randn(1, 1, 7, 16)
    attention_op.attention(q, k, v, causal=True, window=(3, -1))
    assert asked[-1] == ("attention.fwd", (1, 2, 1, 5, 7, 16, ("causal", "1"), ("window", "3:-1")))
    lowbit_op.config_for(lowbit_op.GEMV_ID, (1, 64, 64), torch.float32, torch.device("cpu"), "reference",
                         32, "int3", 32)
    assert asked[-1] == ("lowbit_linear.gemv", (1, 64, 64, ("fmt", "int3"), ("group", "32")))


def test_launch_hooks_run_around_every_gated_and_timed_launch(tmp_path):
    """A kernel whose op finishes with a second step (split-K's reduction) is gated and timed with that step:
    here an after-hook doubles the matmul's output and the reference expects the doubled value."""
    import dataclasses
    from tilekit.autotune import protocol
    calls = []
    base = kernels()["matmul.main"]

    def after(inputs, out, config, backend):
        calls.append("after")
        out.mul_(2)

    doubled = dataclasses.replace(base, id="matmul.doubled_for_test", after_launch=after,
                                  before_launch=lambda *a: calls.append("before"),
                                  reference=lambda *inputs: 2 * base.reference(*inputs))
    protocol.register(doubled)
    try:
        shape = (13, 7, 9)
        req = {"kernel": doubled.id, "shape": list(shape), "flags": {}, "dtype": "float32",
               "backend": "reference", "device": "cpu", "seed": 1, "timing_lock": str(tmp_path / "lock"),
               "config": base.default_config(shape, torch.float32, torch.device("cpu")), "warmup": 1,
               "repeats": 2}
        answer = run_request(req)
        assert answer["status"] == "ok", answer
        runs = 4 + (3 if answer["retimed"] else 0)   # first run, 1 warm-up, 2 timed (and a quieter retime)
        assert calls == ["before", "after"] * runs
        plain = run_request({**req, "kernel": "matmul.main", "gate_only": True})
        assert plain["status"] == "ok"
        wrong = dataclasses.replace(doubled, id="matmul.unfinished_for_test", after_launch=None)
        protocol.register(wrong)
        assert run_request({**req, "kernel": wrong.id, "gate_only": True})["status"] == "wrong"
    finally:
        protocol._REGISTRY.pop("matmul.doubled_for_test", None)
        protocol._REGISTRY.pop("matmul.unfinished_for_test", None)


def test_a_shape_rule_prunes_what_the_tunables_rule_cannot_see():
    gemv = kernels()["lowbit_linear.gemv"]
    config = gemv.default_config_for((3, 64, 64), (), torch.float32, torch.device("cpu"))
    assert gemv.why_invalid(config, torch.float32, (3, 64, 64)) is None
    small = {**config, "BM": 1}
    assert gemv.why_invalid(small, torch.float32) is None                   # no shape: the tunables' rule only
    assert "BM = 1 < M = 3" in gemv.why_invalid(small, torch.float32, (3, 64, 64), gemv.canonical_flags(()))
