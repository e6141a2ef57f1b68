"""A corpus of tilekit kernels with input makers, launchers and independent references.

Each ``Case`` is data, so any backend runs the whole corpus by being one more parameter:

    for case in CASES:
        args = case.make_inputs(rng, shape, dtype, variant)
        got = case.launch(args, backend, config)        # the kernel's output tensors, in order
        want = case.reference(args)                      # float64 (or exact int) references, same order

``make_inputs`` draws from a ``torch.Generator`` (never all-zero data) and pre-fills outputs with NaN
or a sentinel, so an element a kernel forgets to write fails the comparison. ``reference`` never runs
tilekit: it is PyTorch in float64 (or int64), computed from the inputs as stored.

A case also says which shapes to draw (``dims``: inclusive ranges), its tile configs (constexpr
block sizes; ``valid(config, shape)`` filters those a shape cannot use), optional ``variants``
(packed dtypes, activations, runtime flags) and the edge shapes that must always run.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

import tilekit as tk
from tilekit import tolerances

# ---------------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------------


@tk.kernel
def affine_bcast(X, R, Cv, Y, alpha, shift, BM: tk.constexpr = 32, BN: tk.constexpr = 32):
    """Y = leaky_relu(alpha * X + R[:, None] - 2 * Cv[None, :] + shift): row and column vectors, scalars."""
    pm = tk.program_id(0)
    pn = tk.program_id(1)
    x = tk.load(X, (pm * BM, pn * BN), (BM, BN))
    r = tk.load(R, (pm * BM,), (BM,))
    c = tk.load(Cv, (pn * BN,), (BN,))
    y = alpha * x.to(tk.float32) + r[:, None] - 2 * c[None, :] + shift
    y = tk.where(y > 0, y, 0.125 * y)
    tk.store(Y, (pm * BM, pn * BN), y.to(Y.dtype))


@tk.kernel
def softmax_rows(X, Y, BM: tk.constexpr = 4, BN: tk.constexpr = 128):
    """Row softmax of BM rows per program; BN covers the whole row."""
    pm = tk.program_id(0)
    x = tk.load(X, (pm * BM, 0), (BM, BN), other=-float("inf")).to(tk.float32)
    x = x - tk.max(x, axis=1)[:, None]
    e = tk.exp(x)
    tk.store(Y, (pm * BM, 0), (e / tk.sum(e, axis=1)[:, None]).to(Y.dtype))


@tk.kernel
def layernorm_rows(X, W, B, Y, eps, BM: tk.constexpr = 4, BN: tk.constexpr = 64):
    """LayerNorm over the last dim, two passes of BN-wide column blocks (loop-carried statistics)."""
    M, N = X.shape
    pm = tk.program_id(0)
    s1 = tk.zeros((BM, BN), tk.float32)
    s2 = tk.zeros((BM, BN), tk.float32)
    for k in tk.range(0, N, BN):
        x = tk.load(X, (pm * BM, k), (BM, BN)).to(tk.float32)
        s1 += x
        s2 = s2 + x * x
    mean = tk.sum(s1, axis=1) / N
    var = tk.sum(s2, axis=1) / N - mean * mean
    rstd = tk.rsqrt(var + eps)
    for k in tk.range(0, N, BN):
        x = tk.load(X, (pm * BM, k), (BM, BN)).to(tk.float32)
        w = tk.load(W, (k,), (BN,)).to(tk.float32)
        b = tk.load(B, (k,), (BN,)).to(tk.float32)
        y = (x - mean[:, None]) * rstd[:, None] * w[None, :] + b[None, :]
        tk.store(Y, (pm * BM, k), y.to(Y.dtype))


@tk.kernel
def cumsum_rows(X, Y, BM: tk.constexpr = 4, BN: tk.constexpr = 32):
    """Inclusive prefix sum along each row, BN columns at a time with a carried running total."""
    M, N = X.shape
    pm = tk.program_id(0)
    acc_dt = tk.float32 if X.dtype.is_float else tk.int32
    carry = tk.zeros((BM,), acc_dt)
    for k in tk.range(0, N, BN):
        x = tk.load(X, (pm * BM, k), (BM, BN)).to(acc_dt)
        tk.store(Y, (pm * BM, k), (tk.cumsum(x, axis=1) + carry[:, None]).to(Y.dtype))
        carry = carry + tk.sum(x, axis=1)


@tk.func
def linrec_combine(a_l, b_l, a_r, b_r):
    """(a_l, b_l) then (a_r, b_r) of h = a * h + b: composed, the map h -> a_l a_r h + (a_r b_l + b_r)."""
    return a_l * a_r, a_r * b_l + b_r


@tk.kernel
def linrec_rows(A, Bx, H, BM: tk.constexpr = 4, BN: tk.constexpr = 32):
    """h_t = a_t * h_{t-1} + b_t along each row (h_{-1} = 0), via tk.associative_scan over (a, b)."""
    M, N = A.shape
    pm = tk.program_id(0)
    last = (tk.arange(BN) == BN - 1)[None, :]
    h0 = tk.zeros((BM,), tk.float32)
    for k in tk.range(0, N, BN):
        # padding a=1, b=0 carries h unchanged past the row's end, so the last column is h_{N-1}
        a = tk.load(A, (pm * BM, k), (BM, BN), other=1.0).to(tk.float32)
        b = tk.load(Bx, (pm * BM, k), (BM, BN)).to(tk.float32)
        aa, bb = tk.associative_scan((a, b), 1, linrec_combine)
        h = aa * h0[:, None] + bb
        tk.store(H, (pm * BM, k), h.to(H.dtype))
        h0 = tk.sum(tk.where(last, h, 0.0), axis=1)


@tk.kernel
def gather_rows(X, Idx, Out, BM: tk.constexpr = 16, BN: tk.constexpr = 32):
    """Out[i, :] = X[Idx[i], :]; the ragged tail of Idx reads as -1 and is masked."""
    N = X.shape[1]
    pm = tk.program_id(0)
    rows = tk.load(Idx, (pm * BM,), (BM,), other=-1)
    valid = rows >= 0
    for k in tk.range(0, N, BN):
        v = tk.load(X, (rows, k), (BM, BN), mask=valid[:, None])
        tk.store(Out, (pm * BM, k), v)


@tk.kernel
def scatter_add_rows(X, Idx, Out, BM: tk.constexpr = 16, BN: tk.constexpr = 32):
    """Out[Idx[i], :] += X[i, :] with duplicate indices, by tk.atomic_add (masked ragged tail)."""
    n, N = X.shape
    pm = tk.program_id(0)
    rows = tk.load(Idx, (pm * BM,), (BM,))
    valid = (pm * BM + tk.arange(BM)) < n
    for k in tk.range(0, N, BN):
        v = tk.load(X, (pm * BM, k), (BM, BN))
        tk.atomic_add(Out, (rows, k), v, mask=valid[:, None])


@tk.kernel
def dequant_groups(W, S, Out, G: tk.constexpr = 8, BN: tk.constexpr = 16, BK: tk.constexpr = 32):
    """Out = unpack(W) * S[:, k // G]: packed sub-byte / small-float weights with per-group scales."""
    N, K = W.shape
    pn = tk.program_id(0)
    for k in tk.range(0, K, BK):
        w = tk.load(W, (pn * BN, k), (BN, BK)).to(tk.float32)
        s = tk.load(S, (pn * BN, k // G), (BN, BK // G)).to(tk.float32)
        y = w.reshape(BN, BK // G, G) * s[:, :, None]
        tk.store(Out, (pn * BN, k), y.reshape(BN, BK).to(Out.dtype))


@tk.kernel
def matmul_epilogue(A, B, Bias, C, has_bias, BM: tk.constexpr = 32, BN: tk.constexpr = 32,
                    BK: tk.constexpr = 16, ACT: tk.constexpr = "none"):
    """C = act(A @ B + has_bias * Bias[None, :]) with a K loop, a runtime `if` and a constexpr epilogue."""
    M, K = A.shape
    N = B.shape[1]
    pm, pn = tk.program_id(0), tk.program_id(1)
    acc = tk.zeros((BM, BN), tk.float32)
    for k in tk.range(0, K, BK):
        a = tk.load(A, (pm * BM, k), (BM, BK))
        b = tk.load(B, (k, pn * BN), (BK, BN))
        acc = tk.mma(a, b, acc)
    if has_bias:
        acc = acc + tk.load(Bias, (pn * BN,), (BN,)).to(tk.float32)[None, :]
    if ACT == "relu":
        acc = tk.maximum(acc, 0.0)
    elif ACT == "sigmoid":
        acc = tk.sigmoid(acc)
    elif ACT == "softplus":
        acc = tk.softplus(acc)
    tk.store(C, (pm * BM, pn * BN), acc.to(C.dtype))


@tk.kernel
def expert_select(X, Ids, Scale, Y, fill, BM: tk.constexpr = 8, BN: tk.constexpr = 32):
    """A scalar load (the block's expert id) picks a scale row; X is read with a runtime other= (visible in the
    row max when N < BN); a static slice keeps the left half and a constant index takes column 0."""
    pm = tk.program_id(0)
    e = tk.load(Ids, (pm,))
    s = tk.load(Scale, (e, 0), (1, BN))
    x = tk.load(X, (pm * BM, 0), (BM, BN), other=fill).to(tk.float32)
    y = x * s
    top = tk.max(x, axis=1)
    tk.store(Y, (pm * BM, 0), (y[:, 0:BN // 2] + y[:, 0][:, None] + top[:, None]).to(Y.dtype))


@tk.kernel
def packed_halves(W, Y, BM: tk.constexpr = 8, BN: tk.constexpr = 64):
    """Packed tile loads along K (the words of each tile in one load), split by static slices:
    Y[m] = sum over K blocks of 2 * sum(left half) - sum(right half)."""
    M, K = W.shape
    pm = tk.program_id(0)
    acc = tk.zeros((BM,), tk.float32)
    for k in tk.range(0, K, BN):
        w = tk.load(W, (pm * BM, k), (BM, BN)).to(tk.float32)
        acc = acc + 2.0 * tk.sum(w[:, :BN // 2], axis=1) - tk.sum(w[:, BN // 2:], axis=1)
    tk.store(Y, (pm * BM,), acc.to(Y.dtype))


# ---------------------------------------------------------------------------------------------------
# The Case record
# ---------------------------------------------------------------------------------------------------

F32, F16, BF16, I32 = torch.float32, torch.float16, torch.bfloat16, torch.int32
FLOATS = (F32, F16, BF16)


@dataclass
class Case:
    name: str
    kernel: tk.Kernel
    dims: tuple                      # ((lo, hi), ...) inclusive, one per shape entry
    dtypes: tuple                    # torch dtypes of the data
    configs: tuple                   # constexpr dicts
    make_inputs: Callable            # (rng, shape, dtype, variant) -> {param: tensor/scalar}
    launch: Callable                 # (args, backend, config) -> [output tensors]
    reference: Callable              # (args) -> [expected float64/int64 tensors]
    variants: tuple = (None,)
    edge_shapes: tuple = ()          # shapes that always run (config 0)
    valid: Callable = field(default=lambda config, shape: True)
    # (args, dtype) -> per-element absolute error allowed on top of tilekit.tolerances, or None
    error_bound: Callable | None = None

    def __repr__(self):
        return f"Case({self.name})"

    def configs_for(self, shape):
        return [c for c in self.configs if self.valid(c, shape)]


# ---- input helpers ---------------------------------------------------------------------------------

def randn(rng, shape, dtype, scale=1.0, offset=0.0):
    x = torch.randn(shape, generator=rng, dtype=torch.float64) * scale + offset
    if x.numel() and not x.abs().sum() > 0:  # a Generator never does this; the check documents the rule
        x[(0,) * x.dim()] = 1.0
    return x.to(dtype)


def uniform(rng, shape, lo, hi, dtype):
    return (torch.rand(shape, generator=rng, dtype=torch.float64) * (hi - lo) + lo).to(dtype)


def data(rng, shape, dtype):
    """Random data of ``dtype``: normal floats, or small nonzero-mean integers."""
    if dtype.is_floating_point:
        return randn(rng, shape, dtype)
    return torch.randint(-40, 41, shape, generator=rng, dtype=torch.int64).to(dtype)


def poisoned(shape, dtype):
    """An output buffer an unwritten element shows up in: NaN for floats, a sentinel for ints."""
    if dtype.is_floating_point:
        return torch.full(shape, float("nan"), dtype=dtype)
    return torch.full(shape, -12345, dtype=dtype)


def f64(t):
    return t.to(torch.float64)


def cdiv(a, b):
    return -(-a // b)


# ---- per-case inputs, launches, references ----------------------------------------------------------

def _affine_inputs(rng, shape, dtype, variant):
    M, N = shape
    return {"X": data(rng, (M, N), dtype), "R": data(rng, (M,), dtype), "Cv": data(rng, (N,), dtype),
            "Y": poisoned((M, N), dtype), "alpha": 1.5, "shift": 3}


def _affine_launch(a, backend, cfg):
    M, N = a["X"].shape
    affine_bcast[(cdiv(M, cfg["BM"]), cdiv(N, cfg["BN"]))](a["X"], a["R"], a["Cv"], a["Y"], a["alpha"], a["shift"],
                                                         backend=backend, **cfg)
    return [a["Y"]]


def _affine_ref(a):
    y = a["alpha"] * f64(a["X"]) + f64(a["R"])[:, None] - 2 * f64(a["Cv"])[None, :] + a["shift"]
    return [torch.where(y > 0, y, 0.125 * y)]


def _softmax_inputs(rng, shape, dtype, variant):
    return {"X": randn(rng, shape, dtype, scale=2.0), "Y": poisoned(shape, dtype)}


def _softmax_launch(a, backend, cfg):
    M, N = a["X"].shape
    softmax_rows[(cdiv(M, cfg["BM"]),)](a["X"], a["Y"], backend=backend, **cfg)
    return [a["Y"]]


def _softmax_ref(a):
    return [torch.softmax(f64(a["X"]), dim=1)]


def _layernorm_inputs(rng, shape, dtype, variant):
    M, N = shape
    return {"X": randn(rng, shape, dtype, offset=0.5), "W": randn(rng, (N,), dtype, offset=1.0),
            "B": randn(rng, (N,), dtype), "Y": poisoned(shape, dtype), "eps": 1e-5}


def _layernorm_launch(a, backend, cfg):
    M, N = a["X"].shape
    layernorm_rows[(cdiv(M, cfg["BM"]),)](a["X"], a["W"], a["B"], a["Y"], a["eps"], backend=backend, **cfg)
    return [a["Y"]]


def _layernorm_ref(a):
    N = a["X"].shape[1]
    return [torch.nn.functional.layer_norm(f64(a["X"]), (N,), f64(a["W"]), f64(a["B"]), eps=a["eps"])]


def _cumsum_inputs(rng, shape, dtype, variant):
    return {"X": data(rng, shape, dtype), "Y": poisoned(shape, dtype)}


def _cumsum_launch(a, backend, cfg):
    M, N = a["X"].shape
    cumsum_rows[(cdiv(M, cfg["BM"]),)](a["X"], a["Y"], backend=backend, **cfg)
    return [a["Y"]]


def _cumsum_ref(a):
    x = a["X"]
    return [torch.cumsum(x.to(torch.float64 if x.is_floating_point() else torch.int64), dim=1)]


def _linrec_inputs(rng, shape, dtype, variant):
    return {"A": uniform(rng, shape, 0.2, 0.9, dtype), "Bx": randn(rng, shape, dtype),
            "H": poisoned(shape, dtype)}


def _linrec_launch(a, backend, cfg):
    M, N = a["A"].shape
    linrec_rows[(cdiv(M, cfg["BM"]),)](a["A"], a["Bx"], a["H"], backend=backend, **cfg)
    return [a["H"]]


def _linrec_ref(a):
    A, B = f64(a["A"]), f64(a["Bx"])
    out = torch.empty_like(A)
    h = torch.zeros(A.shape[0], dtype=torch.float64)
    for t in range(A.shape[1]):
        h = A[:, t] * h + B[:, t]
        out[:, t] = h
    return [out]


def _gather_inputs(rng, shape, dtype, variant):
    n_out, n_src, N = shape
    idx_dtype = variant or torch.int32
    return {"X": data(rng, (n_src, N), dtype),
            "Idx": torch.randint(0, n_src, (n_out,), generator=rng).to(idx_dtype),
            "Out": poisoned((n_out, N), dtype)}


def _gather_launch(a, backend, cfg):
    n_out = a["Idx"].shape[0]
    gather_rows[(cdiv(n_out, cfg["BM"]),)](a["X"], a["Idx"], a["Out"], backend=backend, **cfg)
    return [a["Out"]]


def _gather_ref(a):
    x = a["X"]
    return [x.to(torch.float64 if x.is_floating_point() else torch.int64)[a["Idx"].long()]]


def _scatter_inputs(rng, shape, dtype, variant):
    n, n_dst, N = shape
    return {"X": data(rng, (n, N), dtype),
            "Idx": torch.randint(0, n_dst, (n,), generator=rng, dtype=torch.int32),  # n > n_dst: duplicates
            "Out": data(rng, (n_dst, N), dtype)}


def _scatter_launch(a, backend, cfg):
    a["Out0"] = a["Out"].clone()
    n = a["X"].shape[0]
    scatter_add_rows[(cdiv(n, cfg["BM"]),)](a["X"], a["Idx"], a["Out"], backend=backend, **cfg)
    return [a["Out"]]


def _scatter_error_bound(a, dtype):
    """Each destination element takes one rounded add per source row that lands on it, in any order."""
    if not a["X"].is_floating_point():
        return None
    out0 = a["Out0"] if "Out0" in a else a["Out"]  # launches keep the pristine output as Out0
    count = torch.bincount(a["Idx"].long(), minlength=out0.shape[0]).double()[:, None]
    abs_sum = out0.double().abs().index_add(0, a["Idx"].long(), a["X"].double().abs())
    return tolerances.sequential_rounding_bound(dtype, count, abs_sum)


def _scatter_ref(a):
    wide = torch.float64 if a["X"].is_floating_point() else torch.int64
    out = a["Out0"].to(wide).clone()
    out.index_add_(0, a["Idx"].long(), a["X"].to(wide))
    return [out]


PACKED_DTYPES = (tk.int1, tk.uint1, tk.int3, tk.uint2, tk.int4, tk.uint5, tk.int7, tk.int8, tk.uint8,
                 tk.float4_e2m1, tk.float6_e3m2, tk.float6_e2m3, tk.float8_e4m3, tk.float8_e5m2)


def representable(dt):
    """Every finite value a packed dtype can hold, as float64."""
    from tilekit import dtypes as D
    if dt.is_float:
        t = torch.from_numpy(D.small_float_table(dt))
        return t[torch.isfinite(t)]
    lo, hi = D.int_range(dt)
    return torch.arange(lo, hi + 1, dtype=torch.float64)


def _dequant_inputs(rng, shape, dtype, variant):
    N, K = shape
    wdt = variant
    vals = representable(wdt)
    codes = torch.randint(0, vals.numel(), (N, K), generator=rng)
    w = vals[codes]
    G = 8
    return {"W": tk.pack(w, wdt), "Wvals": w, "S": uniform(rng, (N, cdiv(K, G)), 0.25, 1.0, dtype),
            "Out": poisoned((N, K), dtype), "G": G}


def _dequant_launch(a, backend, cfg):
    N = a["W"].shape[0]
    dequant_groups[(cdiv(N, cfg["BN"]),)](a["W"], a["S"], a["Out"], backend=backend, G=a["G"], **cfg)
    return [a["Out"]]


def _dequant_ref(a):
    K = a["Wvals"].shape[1]
    scales = f64(a["S"]).repeat_interleave(a["G"], dim=1)[:, :K]
    return [a["Wvals"] * scales]


def _expert_inputs(rng, shape, dtype, variant):
    M, N, E = shape
    blocks = cdiv(M, 8)  # enough ids for the smallest BM
    return {"X": randn(rng, (M, N), dtype), "Ids": torch.randint(0, E, (blocks,), generator=rng, dtype=torch.int32),
            "Scale": randn(rng, (E, N), torch.float32), "Y": poisoned((M, N), dtype),
            "fill": float(uniform(rng, (), 3.0, 6.0, torch.float64))}


def _expert_launch(a, backend, cfg):
    M = a["X"].shape[0]
    a["BM"], a["BN"] = cfg["BM"], cfg["BN"]
    expert_select[(cdiv(M, cfg["BM"]),)](a["X"], a["Ids"], a["Scale"], a["Y"], a["fill"], backend=backend, **cfg)
    return [a["Y"]]


def _expert_ref(a):
    x, (M, N) = f64(a["X"]), a["X"].shape
    bm, bn = a["BM"], a["BN"]
    e = a["Ids"].long()[torch.arange(M) // bm]
    padded = torch.cat([x, torch.full((M, bn - N), f64(torch.tensor(a["fill"], dtype=torch.float32)).item(),
                                      dtype=torch.float64)], 1)
    s = torch.cat([f64(a["Scale"])[e], torch.zeros(M, bn - N, dtype=torch.float64)], 1)
    y = padded * s
    return [(y[:, :bn // 2] + y[:, :1] + padded.max(1, keepdim=True).values)[:, :N]]


def _packed_halves_inputs(rng, shape, dtype, variant):
    M, K = shape
    vals = representable(variant)
    w = vals[torch.randint(0, vals.numel(), (M, K), generator=rng)]
    return {"W": tk.pack(w, variant), "Wvals": w, "Y": poisoned((M,), dtype)}


def _packed_halves_launch(a, backend, cfg):
    a["BN"] = cfg["BN"]
    packed_halves[(cdiv(a["W"].shape[0], cfg["BM"]),)](a["W"], a["Y"], backend=backend, **cfg)
    return [a["Y"]]


def _packed_halves_ref(a):
    w, bn = a["Wvals"], a["BN"]
    sign = torch.where(torch.arange(w.shape[1]) % bn < bn // 2, 2.0, -1.0).to(torch.float64)
    return [(w * sign).sum(1)]


def _matmul_inputs(rng, shape, dtype, variant):
    M, K, N = shape
    return {"A": randn(rng, (M, K), dtype), "B": randn(rng, (K, N), dtype), "Bias": randn(rng, (N,), dtype),
            "C": poisoned((M, N), dtype), "has_bias": variant}


def _matmul_launch(a, backend, cfg):
    (M, K), N = a["A"].shape, a["B"].shape[1]
    matmul_epilogue[(cdiv(M, cfg["BM"]), cdiv(N, cfg["BN"]))](a["A"], a["B"], a["Bias"], a["C"], a["has_bias"],
                                                              backend=backend, **cfg)
    return [a["C"]]


def _matmul_ref(a, act=None):
    y = f64(a["A"]) @ f64(a["B"])
    if a["has_bias"]:
        y = y + f64(a["Bias"])[None, :]
    return [y]


_ACTS = {"none": lambda y: y, "relu": torch.relu, "sigmoid": torch.sigmoid,
         "softplus": torch.nn.functional.softplus}


def _tile_fits(*pairs):
    """valid(config, shape): the tile covers the whole dim, config[key] >= shape[i], for each (key, i)."""
    def valid(cfg, shape):
        return all(cfg[k] >= shape[i] for k, i in pairs)
    return valid


# ---- the corpus --------------------------------------------------------------------------------------

CASES = [
    Case("affine_bcast", affine_bcast, dims=((1, 70), (1, 70)), dtypes=FLOATS,
         configs=({"BM": 32, "BN": 32}, {"BM": 16, "BN": 64}, {"BM": 64, "BN": 16}),
         make_inputs=_affine_inputs, launch=_affine_launch, reference=_affine_ref,
         edge_shapes=((1, 1), (33, 33), (0, 5), (5, 0))),
    Case("softmax_rows", softmax_rows, dims=((1, 40), (1, 128)), dtypes=FLOATS,
         configs=({"BM": 8, "BN": 128}, {"BM": 16, "BN": 128}, {"BM": 4, "BN": 64}, {"BM": 8, "BN": 32}),
         make_inputs=_softmax_inputs, launch=_softmax_launch, reference=_softmax_ref,
         edge_shapes=((1, 1), (9, 33), (0, 7)), valid=_tile_fits(("BN", 1))),
    Case("layernorm_rows", layernorm_rows, dims=((1, 30), (1, 150)), dtypes=FLOATS,
         configs=({"BM": 8, "BN": 64}, {"BM": 16, "BN": 128}, {"BM": 4, "BN": 32}),
         make_inputs=_layernorm_inputs, launch=_layernorm_launch, reference=_layernorm_ref,
         edge_shapes=((1, 1), (9, 65), (0, 10))),
    Case("cumsum_rows", cumsum_rows, dims=((1, 30), (1, 150)), dtypes=FLOATS + (I32,),
         configs=({"BM": 8, "BN": 64}, {"BM": 16, "BN": 32}, {"BM": 4, "BN": 128}),
         make_inputs=_cumsum_inputs, launch=_cumsum_launch, reference=_cumsum_ref,
         edge_shapes=((1, 1), (9, 65), (0, 3), (3, 0))),
    Case("linrec_scan", linrec_rows, dims=((1, 30), (1, 150)), dtypes=FLOATS,
         configs=({"BM": 8, "BN": 64}, {"BM": 16, "BN": 32}, {"BM": 4, "BN": 128}),
         make_inputs=_linrec_inputs, launch=_linrec_launch, reference=_linrec_ref,
         edge_shapes=((1, 1), (9, 65), (0, 4))),
    Case("gather_rows", gather_rows, dims=((1, 60), (1, 40), (1, 100)), dtypes=FLOATS + (I32,),
         configs=({"BM": 16, "BN": 64}, {"BM": 32, "BN": 32}, {"BM": 64, "BN": 128}),
         make_inputs=_gather_inputs, launch=_gather_launch, reference=_gather_ref,
         variants=(torch.int32, torch.int64),
         edge_shapes=((1, 1, 1), (17, 5, 65), (0, 3, 4), (3, 3, 0))),
    Case("scatter_add_rows", scatter_add_rows, dims=((1, 60), (1, 12), (1, 100)), dtypes=(F32, F16, BF16, I32),
         configs=({"BM": 16, "BN": 64}, {"BM": 32, "BN": 32}, {"BM": 64, "BN": 128}),
         make_inputs=_scatter_inputs, launch=_scatter_launch, reference=_scatter_ref,
         error_bound=_scatter_error_bound,
         edge_shapes=((1, 1, 1), (17, 2, 65), (0, 3, 4))),
    Case("expert_select", expert_select, dims=((1, 40), (1, 16), (1, 5)), dtypes=FLOATS,
         configs=({"BM": 8, "BN": 32}, {"BM": 16, "BN": 64}),
         make_inputs=_expert_inputs, launch=_expert_launch, reference=_expert_ref,
         edge_shapes=((1, 1, 1), (9, 16, 2), (0, 3, 1))),
    Case("packed_halves", packed_halves, dims=((1, 20), (1, 150)), dtypes=(F32,),
         configs=({"BM": 8, "BN": 64}, {"BM": 4, "BN": 32}),
         make_inputs=_packed_halves_inputs, launch=_packed_halves_launch, reference=_packed_halves_ref,
         variants=(tk.int3, tk.int4, tk.uint5, tk.float6_e2m3, tk.int8, tk.uint1),
         edge_shapes=((1, 1), (9, 65), (3, 0))),
    Case("dequant_groups", dequant_groups, dims=((1, 40), (1, 100)), dtypes=FLOATS,
         configs=({"BN": 16, "BK": 32}, {"BN": 32, "BK": 64}, {"BN": 8, "BK": 128}),
         make_inputs=_dequant_inputs, launch=_dequant_launch, reference=_dequant_ref,
         variants=PACKED_DTYPES,
         edge_shapes=((1, 1), (17, 33), (0, 5))),
]

_MATMUL_CONFIGS = tuple({"BM": bm, "BN": bn, "BK": bk, "ACT": act}
                        for (bm, bn, bk), act in zip([(32, 32, 16), (16, 64, 32), (64, 16, 16), (16, 16, 64)],
                                                     ["none", "relu", "sigmoid", "softplus"]))


def _matmul_launch_act(a, backend, cfg):
    a["ACT"] = cfg["ACT"]
    return _matmul_launch(a, backend, cfg)


def _matmul_ref_act(a):
    return [_ACTS[a["ACT"]](_matmul_ref(a)[0])]


CASES.append(Case("matmul_epilogue", matmul_epilogue, dims=((1, 70), (1, 70), (1, 70)), dtypes=FLOATS,
                  configs=_MATMUL_CONFIGS, make_inputs=_matmul_inputs, launch=_matmul_launch_act,
                  reference=_matmul_ref_act, variants=(True, False, 0, 1),
                  edge_shapes=((1, 1, 1), (33, 17, 33), (0, 5, 5), (4, 0, 6))))

CASES_BY_NAME = {c.name: c for c in CASES}

# Backends whose bf16 arithmetic is known wrong: Triton's interpreter does integer arithmetic on the raw
# bits. A backend in this set runs the corpus in fp16/fp32 (and ints) only.
NO_BF16 = {"triton"}


def supports(backend, dtype):
    """Whether ``backend`` should run corpus data of ``dtype``."""
    return not (dtype == torch.bfloat16 and backend in NO_BF16)


def run_case(case, backend, shape, dtype, config, seed, variant=None):
    """Build inputs, launch on ``backend`` and compute the reference: (actual outputs, expected, args)."""
    rng = torch.Generator().manual_seed(seed)
    args = case.make_inputs(rng, shape, dtype, case.variants[0] if variant is None else variant)
    got = case.launch(args, backend, config)
    want = case.reference(args)
    return got, want, args
