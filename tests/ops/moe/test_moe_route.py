"""moe_route and moe_align against float64 / plain-Python references written here."""
import itertools

import pytest
import torch
from hypothesis import HealthCheck, assume, example, given, settings, strategies as st

import tilekit.ops as ops
from tilekit.tolerances import assert_close, op_table

ROUTE = op_table("moe", "ROUTE")
ROUTE_BACKWARD = op_table("moe", "ROUTE_BACKWARD")
SETTINGS = dict(deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


def route_by_hand(logits, top_k, scoring, renormalize, bias, num_groups, topk_groups, route_scale):
    """Token by token in float64 Python: DESIGN.md's rules, the lower id winning every tie."""
    weights, ids = [], []
    for row in logits.double().tolist():
        t = torch.tensor(row, dtype=torch.float64)
        p = torch.softmax(t, 0) if scoring == "softmax" else torch.sigmoid(t)
        sel = (p + bias.double()) if bias is not None else p
        allowed = list(range(len(row)))
        if num_groups:
            size = len(row) // num_groups
            scores = []
            for g in range(num_groups):
                members = sorted(sel[g * size:(g + 1) * size].tolist(), reverse=True)
                scores.append(members[0] + members[1])
            groups = sorted(range(num_groups), key=lambda g: (-scores[g], g))[:topk_groups]
            allowed = [e for e in allowed if e // size in groups]
        chosen = sorted(allowed, key=lambda e: (-float(sel[e]), e))[:top_k]
        w = p[chosen]
        if renormalize:
            w = w / w.sum()
        weights.append((w * route_scale).tolist())
        ids.append(chosen)
    return torch.tensor(weights, dtype=torch.float64).reshape(-1, top_k), torch.tensor(ids).reshape(-1, top_k)


def _min_gap(values):
    """The smallest nonzero gap between two sel values of one row (near ties fp32 may order either way)."""
    s = values.sort(-1).values
    d = (s[:, 1:] - s[:, :-1]).abs()
    d = d[d > 0]
    return float(d.min()) if d.numel() else 1.0


@st.composite
def route_cases(draw):
    num_groups = draw(st.sampled_from([None, None, 2, 3, 4, 6, 8]))  # 3 and 6: padded group axis (GP=4, 8)
    if num_groups:
        num_experts = num_groups * draw(st.integers(2, 9))
        topk_groups = draw(st.integers(1, num_groups))
        top_k = draw(st.integers(1, min(8, topk_groups * (num_experts // num_groups))))
    else:
        num_experts = draw(st.integers(1, 70))
        topk_groups = None
        top_k = draw(st.integers(1, min(8, num_experts)))
    tokens = draw(st.integers(0, 9))
    # logits on a coarse lattice: exact ties are common, and distinct values are far apart
    logits = torch.tensor(draw(st.lists(st.integers(-12, 12), min_size=tokens * num_experts,
                                        max_size=tokens * num_experts)), dtype=torch.float32) / 4
    logits = logits.reshape(tokens, num_experts)
    bias = None
    if draw(st.booleans()):
        bias = torch.tensor(draw(st.lists(st.integers(-3, 3), min_size=num_experts, max_size=num_experts)),
                            dtype=torch.float32) / 8
    return dict(logits=logits, top_k=top_k, scoring=draw(st.sampled_from(["softmax", "sigmoid"])),
                renormalize=draw(st.booleans()), bias=bias, num_groups=num_groups, topk_groups=topk_groups,
                route_scale=draw(st.sampled_from([1.0, 2.5])))


def _check_route(case, backend, near_ties_possible=True):
    kwargs = {k: v for k, v in case.items() if k not in ("logits", "top_k")}
    want_w, want_ids = route_by_hand(case["logits"], case["top_k"], **kwargs)
    p = torch.softmax(case["logits"].double(), -1) if case["scoring"] == "softmax" else torch.sigmoid(case["logits"].double())
    sel = p + case["bias"].double() if case["bias"] is not None else p
    if near_ties_possible and sel.numel():
        assume(_min_gap(sel) > 1e-5)
    with ops.use_backend(backend):
        w, ids = ops.moe_route(case["logits"], case["top_k"], **kwargs)
    assert w.dtype == torch.float32 and ids.dtype == torch.int32
    assert w.shape == ids.shape == (case["logits"].shape[0], case["top_k"])
    assert torch.equal(ids.long(), want_ids)
    assert_close(w, want_w.float(), table=ROUTE)


@settings(max_examples=25, **SETTINGS)
@given(route_cases())
@example(dict(logits=torch.zeros(0, 16), top_k=2, scoring="softmax", renormalize=True, bias=None,
              num_groups=None, topk_groups=None, route_scale=1.0))
def test_route_reference(case):
    _check_route(case, "reference")


# (backend, E, groups, kept groups, top_k): groups of 6 take the padded grouped layout (a gathered load, SP=8),
# 8 groups of 32 at E=256 top-8 (DeepSeek-V3's routing) the plain one
@pytest.mark.parametrize("backend,experts,groups,kept,top_k", [("triton", 24, 4, 2, 3), ("opencl", 256, 8, 4, 8)])
def test_route_gpu_backends(backend, experts, groups, kept, top_k):
    """Grouped, biased sigmoid routing with exact ties on the compiled backends."""
    logits = torch.randint(-8, 8, (11, experts), generator=torch.Generator().manual_seed(2)).float() / 4
    bias = torch.randint(0, 2, (experts,), generator=torch.Generator().manual_seed(3)).float()
    _check_route(dict(logits=logits, top_k=top_k, scoring="sigmoid", renormalize=True, bias=bias, num_groups=groups,
                      topk_groups=kept, route_scale=2.5), backend, near_ties_possible=False)


@pytest.mark.parametrize("scoring", ["softmax", "sigmoid"])
def test_route_every_combination_at_256_experts(scoring):
    """E = 256, top-8, every bias/group/renormalise combination, with exact ties in each row."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randint(-20, 20, (5, 256), generator=gen).float() / 4
    # an integer bias keeps sel's gaps wide: sel orders by (bias, p)
    bias = torch.randint(0, 2, (256,), generator=gen).float()
    for use_bias, groups, renorm in itertools.product([False, True], [None, 8], [False, True]):
        case = dict(logits=logits, top_k=8, scoring=scoring, renormalize=renorm, bias=bias if use_bias else None,
                    num_groups=groups, topk_groups=4 if groups else None, route_scale=2.5)
        _check_route(case, "reference", near_ties_possible=False)


def test_route_ties_go_to_the_lower_id_and_columns_descend():
    logits = torch.tensor([[1.0, 2.0, 2.0, 0.0, 2.0, 1.0]])
    w, ids = ops.moe_route(logits, 4, renormalize=False)
    assert ids.tolist() == [[1, 2, 4, 0]]
    assert torch.all(w[:, :-1] >= w[:, 1:])


def test_route_group_ties_go_to_the_lower_group():
    logits = torch.tensor([[0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0]])  # groups 0..3 of 2: scores 1,1,1,1
    _, ids = ops.moe_route(logits, 2, scoring="sigmoid", num_groups=4, topk_groups=1)
    assert ids.tolist() == [[1, 0]]


def _check_route_backward(backend, combinations, experts=24, top_k=3, **route):
    gen = torch.Generator().manual_seed(1)
    for scoring, renorm in combinations:
        logits = torch.randn(7, experts, generator=gen)
        leaf = logits.clone().requires_grad_()
        with ops.use_backend(backend):
            w, ids = ops.moe_route(leaf, top_k, scoring=scoring, renormalize=renorm, route_scale=1.5, **route)
            grad = torch.randn(7, top_k, generator=gen)
            (got,) = torch.autograd.grad(w, leaf, grad)
        ref = logits.double().requires_grad_()
        p = torch.softmax(ref, -1) if scoring == "softmax" else torch.sigmoid(ref)
        wr = p.gather(1, ids.long())
        if renorm:
            wr = wr / wr.sum(-1, keepdim=True)
        (want,) = torch.autograd.grad(wr * 1.5, ref, grad.double())
        assert_close(got, want.float(), table=ROUTE_BACKWARD)


def test_route_backward_against_autograd():
    _check_route_backward("reference", itertools.product(["softmax", "sigmoid"], [False, True]))


def test_route_backward_opencl_at_256_experts():
    """DeepSeek-V3's routing (the forward variant test_route_gpu_backends compiles), then its backward."""
    bias = torch.randint(0, 2, (256,), generator=torch.Generator().manual_seed(3)).float()
    _check_route_backward("opencl", [("sigmoid", True)], experts=256, top_k=8, bias=bias, num_groups=8,
                          topk_groups=4)


def test_route_rejects_bad_arguments():
    x = torch.randn(3, 16)
    with pytest.raises(ValueError, match="top_k"):
        ops.moe_route(x, 9)
    with pytest.raises(ValueError, match="logits"):
        ops.moe_route(torch.randn(3, 257), 2)
    with pytest.raises(ValueError, match="num_groups"):
        ops.moe_route(x, 2, num_groups=3, topk_groups=1)
    with pytest.raises(ValueError, match="bias"):
        ops.moe_route(x, 2, bias=torch.zeros(15))
    with pytest.raises(ValueError, match="scoring"):
        ops.moe_route(x, 2, scoring="relu")
    with pytest.raises(TypeError, match="logits"):
        ops.moe_route(x.int(), 2)


def test_route_opcheck_and_compile():
    x = torch.randn(5, 16)
    torch.library.opcheck(torch.ops.tilekit.moe_route.default, (x, 2, "sigmoid", True, torch.randn(16), 4, 2, 2.0))
    torch.library.opcheck(torch.ops.tilekit.moe_route.default, (x.requires_grad_(), 3, "softmax", True, None, 0, 0, 1.0),
                          test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))
    compiled = torch.compile(lambda t: ops.moe_route(t, 2, scoring="sigmoid", num_groups=4, topk_groups=2),
                             fullgraph=True)
    w, ids = compiled(x.detach())
    w2, ids2 = ops.moe_route(x.detach(), 2, scoring="sigmoid", num_groups=4, topk_groups=2)
    assert torch.equal(ids, ids2) and torch.equal(w, w2)
