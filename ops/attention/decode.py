"""Paged-KV decode (flash-decoding): ``attention_decode`` over vLLM's (num_blocks, block_size, Hkv, D) cache.
Each program handles one split of one sequence's pages for one KV head, with the GQA group's query heads
packed into one tile (each page is read once per group); a combine kernel merges the splits by their lse."""
import math

import torch

import tilekit as tk

from ..dispatch import backend_for, check_tensor, next_pow2, provided_config
from .kernels import LOG2E, _online_softmax_step, _scores2, _softmax_output

DECODE_ID, COMBINE_ID = "attention.decode", "attention.combine"
SPLIT_CANDIDATES = [1, 2, 4, 8, 16, 32]


def _decode_config_rule(config):
    """Registers: the GQA group's query tile, its scores against one page and the K/V page tiles, per thread
    (GP, PAGE, BD are filled in by the op; the tuner checks the D=128, page-16 worst case)."""
    gp, page, bd = config.get("GP", 16), config.get("PAGE", 16), config.get("BD", 128)
    per_thread = (gp * bd + gp * page + 2 * page * bd) // (32 * config["num_warps"])
    if per_thread > 256:
        return f"a {gp}-head group against {page}-key pages at D={bd} is {per_thread} values per thread"
    return True


DECODE_TUNABLES = tk.Tunables({"num_splits": SPLIT_CANDIDATES, "num_warps": [1, 2, 4, 8], "num_stages": [1, 2, 3]},
                              valid=_decode_config_rule, default={"num_splits": 1, "num_warps": 4, "num_stages": 1})
COMBINE_TUNABLES = tk.Tunables({"num_warps": [1, 2, 4, 8]}, default={"num_warps": 4})


@tk.kernel(tunables=DECODE_TUNABLES)
def attention_decode_kernel(Q, KC, VC, Table, SeqLens, OPart, LPart, pages_per_split, scale, softcap, left,
                            SOFTCAP: tk.constexpr, GP: tk.constexpr, PAGE: tk.constexpr, BD: tk.constexpr,
                            ACC: tk.constexpr):
    B, Hq, D = Q.shape
    Hkv = KC.shape[2]
    group = Hq // Hkv
    split = tk.program_id(0)
    bhk = tk.program_id(1)
    b = bhk // Hkv
    hk = bhk % Hkv
    length = tk.load(SeqLens, (b,))
    first = length - 1 - left  # the oldest key the new token sees
    if first < 0:
        first = 0
    p_lo = split * pages_per_split
    if p_lo < first // PAGE:
        p_lo = first // PAGE
    p_hi = (split + 1) * pages_per_split
    n_pages = (length + PAGE - 1) // PAGE
    if p_hi > n_pages:
        p_hi = n_pages
    heads = tk.arange(GP)
    head_ok = heads < group
    q = tk.load(Q, (b, hk * group, 0), (1, GP, BD), mask=head_ok[None, :, None]).reshape((GP, BD))
    m_i = tk.full((GP,), -float("inf"), ACC)
    l_i = tk.zeros((GP,), ACC)
    acc = tk.zeros((GP, BD), ACC)
    for p in tk.range(p_lo, p_hi):
        page = tk.load(Table, (b, p))
        k = tk.load(KC, (page, 0, hk, 0), (1, PAGE, 1, BD)).reshape((PAGE, BD))
        v = tk.load(VC, (page, 0, hk, 0), (1, PAGE, 1, BD)).reshape((PAGE, BD))
        cols = p * PAGE + tk.arange(PAGE)
        s2, _ = _scores2(tk.dot(q, k.T).to(ACC), scale, softcap, SOFTCAP)
        visible = head_ok[:, None] & (cols[None, :] < length) & (cols[None, :] >= first)
        s2 = tk.where(visible, s2, -float("inf"))
        m_i, alpha, pr, l_i = _online_softmax_step(s2, m_i, l_i)
        acc = acc * alpha[:, None] + tk.dot(pr.to(VC.dtype), v).to(ACC)
    o, lse = _softmax_output(acc, m_i, l_i)
    tk.store(OPart, (b, hk * group, split, 0), o.reshape((1, GP, 1, BD)), mask=head_ok[None, :, None, None])
    tk.store(LPart, (b, hk * group, split), lse.reshape((1, GP, 1)), mask=head_ok[None, :, None])


@tk.kernel(tunables=COMBINE_TUNABLES)
def attention_combine_kernel(OPart, LPart, O, LSE, SP: tk.constexpr, BD: tk.constexpr):
    """Merge the splits of one (sequence, query head): weights exp(lse_s - max lse)."""
    B, Hq, S, D = OPart.shape
    bh = tk.program_id(0)
    b = bh // Hq
    h = bh % Hq
    lse = tk.load(LPart, (b, h, 0), (1, 1, SP), other=-float("inf")).reshape((SP,))
    parts = tk.load(OPart, (b, h, 0, 0), (1, 1, SP, BD)).reshape((SP, BD))
    m = tk.max(lse, axis=0)
    m_safe = tk.where(m == -float("inf"), 0.0, m)
    w = tk.exp2((lse - m_safe) * LOG2E)
    total = tk.sum(w, axis=0)
    o = tk.sum(parts * w[:, None], axis=0) / tk.where(total == 0.0, 1.0, total)
    out_lse = tk.where(total == 0.0, -float("inf"), m_safe + tk.log(tk.where(total == 0.0, 1.0, total)))
    tk.store(O, (b, h, 0), o.to(O.dtype).reshape((1, 1, BD)))
    tk.store(LSE, (b, h), tk.full((1, 1), 0.0, tk.float32) + out_lse)


def choose_num_splits(batch, kv_heads, max_pages):
    """Enough programs to fill ~128 units, never more splits than pages; a power of two (a tuning candidate)."""
    n = max(1, min(max_pages, 16, -(-128 // max(1, batch * kv_heads))))
    return 1 << (n.bit_length() - 1)


def tuning_shape(q, k_cache, block_table):
    """The decode call's tuning shape B,Hq,Hkv,Sq=1,Skv,D, with Skv the block table's reach."""
    return (q.shape[0], q.shape[1], k_cache.shape[2], 1, block_table.shape[1] * k_cache.shape[1], q.shape[2])


def decode_default_config(shape, dtype, device):
    B, Hq, Hkv, _, Skv, D = shape
    return {"num_splits": choose_num_splits(B, Hkv, -(-Skv // 16)), "num_warps": 4, "num_stages": 1}


def decode_config(shape, flags, dtype, device, backend, geometry):
    """The tuned config for this call if the dispatch table has a valid one, else the default. ``geometry``
    (GP, PAGE, BD) is what the validity rule checks against."""
    provided = provided_config(DECODE_ID, tuple(shape) + tuple(flags), dtype, device, backend,
                               _GeometryTunables(DECODE_TUNABLES, geometry), dtype.itemsize)
    return dict(provided) if provided else decode_default_config(shape, dtype, device)


class _GeometryTunables:
    """DECODE_TUNABLES with the call's tile geometry added before the rule runs."""
    def __init__(self, tunables, geometry):
        self.tunables, self.geometry, self.names = tunables, geometry, tunables.names

    def why_invalid(self, config):
        return self.tunables.why_invalid({**config, **self.geometry})


def combine_config(shape, dtype, device, backend):
    provided = provided_config(COMBINE_ID, tuple(shape), dtype, device, backend, COMBINE_TUNABLES, dtype.itemsize)
    return dict(provided) if provided else {"num_warps": 4}


def window_flags(window):
    """The decode call's tuning flags: ``window=L:0`` for a sliding window (decode is causal by nature)."""
    if window is None or int(window[0]) < 0:
        return ()
    return (("window", f"{int(window[0])}:0"),)


def decode_launch_args(q, k_cache, v_cache, block_table, seq_lens, o_part, l_part, config, scale, softcap, left):
    """(grid, args, kwargs) of the split-KV kernel; ``o_part``/``l_part`` hold config's split count (clipped
    to the table's pages) along dim 2. The op and the tuner launch through this."""
    B, Hq, D = q.shape
    Hkv, page = k_cache.shape[2], k_cache.shape[1]
    max_pages = block_table.shape[1]
    splits = o_part.shape[2]
    grid = (splits, B * Hkv)
    args = (q, k_cache, v_cache, block_table, seq_lens, o_part, l_part, -(-max_pages // splits), scale,
            float(softcap or 1.0), left)
    kwargs = dict(SOFTCAP=softcap is not None, GP=max(16, next_pow2(Hq // Hkv)), PAGE=page, BD=max(16, next_pow2(D)),
                  ACC=tk.float32, num_warps=config["num_warps"], num_stages=config["num_stages"])
    return grid, args, kwargs


def combine_launch_args(o_part, l_part, o, lse, config):
    B, Hq, splits, D = o_part.shape
    kwargs = dict(SP=max(2, next_pow2(splits)), BD=max(16, next_pow2(D)), num_warps=config["num_warps"])
    return (B * Hq,), (o_part, l_part, o, lse), kwargs


def attention_decode(q, k_cache, v_cache, block_table, seq_lens, *, scale=None, window=None, softcap=None,
                     num_splits=None, return_lse=False):
    """One new query per sequence against a paged KV cache; no autograd."""
    check_tensor("attention_decode", "q", q, ranks=(3,))
    check_tensor("attention_decode", "k_cache", k_cache, ranks=(4,))
    check_tensor("attention_decode", "v_cache", v_cache, ranks=(4,))
    for name, t in (("block_table", block_table), ("seq_lens", seq_lens)):
        if not isinstance(t, torch.Tensor) or t.dtype != torch.int32:
            raise TypeError(f"tilekit::attention_decode: '{name}' must be an int32 tensor")
    B, Hq, D = q.shape
    nb, page, Hkv, Dk = k_cache.shape
    if v_cache.shape != k_cache.shape or Dk != D or Hq % Hkv:
        raise ValueError(f"tilekit::attention_decode: caches {tuple(k_cache.shape)} / {tuple(v_cache.shape)} do "
                         f"not fit q {tuple(q.shape)}")
    if page & (page - 1):
        raise ValueError(f"tilekit::attention_decode: block_size {page} must be a power of two")
    max_pages = block_table.shape[1]
    o = torch.zeros((B, Hq, D), dtype=q.dtype, device=q.device)
    lse = torch.full((B, Hq), -float("inf"), dtype=torch.float32, device=q.device)
    if o.numel() == 0 or max_pages == 0:
        return (o, lse) if return_lse else o
    backend = backend_for(q.device)
    shape = tuning_shape(q, k_cache, block_table)
    geometry = {"GP": max(16, next_pow2(Hq // Hkv)), "PAGE": page, "BD": max(16, next_pow2(D))}
    config = decode_config(shape, window_flags(window), q.dtype, q.device, backend, geometry)
    splits = int(num_splits) if num_splits is not None else config["num_splits"]
    splits = max(1, min(splits, max_pages))
    left = (1 << 30) if window is None or window[0] < 0 else int(window[0])
    o_part = torch.zeros((B, Hq, splits, D), dtype=torch.float32, device=q.device)
    l_part = torch.full((B, Hq, splits), -float("inf"), dtype=torch.float32, device=q.device)
    scale = float(scale) if scale is not None else 1.0 / math.sqrt(D)
    grid, args, kwargs = decode_launch_args(q, k_cache, v_cache, block_table, seq_lens, o_part, l_part, config,
                                            scale, softcap, left)
    attention_decode_kernel[grid](*args, backend=backend, **kwargs)
    grid, args, kwargs = combine_launch_args(o_part, l_part, o, lse, combine_config(shape, q.dtype, q.device,
                                                                                     backend))
    attention_combine_kernel[grid](*args, backend=backend, **kwargs)
    return (o, lse) if return_lse else o


@torch.library.custom_op("tilekit::attention_decode", mutates_args=())
def attention_decode_op(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_table: torch.Tensor,
                        seq_lens: torch.Tensor, scale: float, window_left: int, softcap: float | None,
                        num_splits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The torch op behind ``attention_decode``: window_left -1 is unbounded, num_splits 0 lets it choose."""
    return attention_decode(q, k_cache, v_cache, block_table, seq_lens, scale=scale,
                            window=None if window_left < 0 else (window_left, 0), softcap=softcap,
                            num_splits=num_splits or None, return_lse=True)


@attention_decode_op.register_fake
def _attention_decode_fake(q, k_cache, v_cache, block_table, seq_lens, scale, window_left, softcap, num_splits):
    return q.new_empty(q.shape), q.new_empty(q.shape[:2], dtype=torch.float32)
