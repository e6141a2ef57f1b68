"""Comparing a candidate's outputs with the reference's, in the parent process.

Tolerances come from ``tilekit.tolerances.KERNELBENCH`` (keyed by the reference output's dtype),
the one place tilekit keeps them. A NaN anywhere in a candidate output fails the trial, whatever
the reference holds there.
"""
from __future__ import annotations

import torch

from tilekit.tolerances import KERNELBENCH, for_dtype

COMPARE_CHUNK = 1 << 24          # elements compared at a time


def compare_trial(reference: list, candidate: list) -> dict:
    """One trial: ``{"passed", "reason", "max_abs_diff", "mismatched", "atol", "rtol"}``."""
    report = {"passed": False, "reason": "", "max_abs_diff": None, "mismatched": None, "atol": None, "rtol": None}
    if len(candidate) != len(reference):
        report["reason"] = f"returned {len(candidate)} output(s), the reference returns {len(reference)}"
        return report
    worst = 0.0
    mismatched = 0
    for index, (ref, out) in enumerate(zip(reference, candidate)):
        label = f"output {index}" if len(reference) > 1 else "output"
        if not isinstance(out, torch.Tensor):
            report["reason"] = f"{label} is a {type(out).__name__}, not a tensor"
            return report
        if tuple(out.shape) != tuple(ref.shape):
            report["reason"] = f"{label} has shape {tuple(out.shape)}, expected {tuple(ref.shape)}"
            return report
        if out.dtype != ref.dtype:
            report["reason"] = f"{label} has dtype {out.dtype}, expected {ref.dtype}"
            return report
        atol, rtol = for_dtype(ref.dtype, KERNELBENCH)
        report["atol"], report["rtol"] = atol, rtol
        if out.is_floating_point() or out.is_complex():
            nan_count = int(torch.isnan(out).sum())
            if nan_count:
                report["reason"] = (f"{label} holds {nan_count} NaN of {out.numel()} values "
                                    "(unwritten or invalid output)")
                report["mismatched"] = nan_count
                return report
        # In chunks: LLM-sized outputs would otherwise need several float64 copies at once.
        flat_ref, flat_out = ref.reshape(-1), out.reshape(-1)
        for start in range(0, flat_ref.numel(), COMPARE_CHUNK):
            ref64 = _widen(flat_ref[start:start + COMPARE_CHUNK])
            out64 = _widen(flat_out[start:start + COMPARE_CHUNK])
            close = torch.isclose(out64, ref64, rtol=rtol, atol=atol, equal_nan=False)
            finite = torch.isfinite(out64) & torch.isfinite(ref64)
            if finite.any():
                worst = max(worst, float((out64[finite] - ref64[finite]).abs().max()))
            if not bool(finite.all()) and not bool(close[~finite].all()):
                worst = float("inf")
            mismatched += int((~close).sum())
    report["max_abs_diff"] = worst
    report["mismatched"] = mismatched
    if mismatched:
        report["reason"] = (f"{mismatched} value(s) differ beyond atol={report['atol']:g}, rtol={report['rtol']:g} "
                            f"(max abs diff {worst:.3g})")
    else:
        report["passed"] = True
    return report


def _widen(tensor: torch.Tensor) -> torch.Tensor:
    if tensor.is_complex():
        return tensor.to(torch.complex128)
    return tensor.to(torch.float64) if tensor.is_floating_point() else tensor.to(torch.int64)


def compare_trials(reference_trials: list, candidate_trials: list) -> tuple[bool, list[dict], str]:
    """All trials must pass. Returns (passed, per-trial reports, first failure reason)."""
    if len(candidate_trials) != len(reference_trials):
        return False, [], (f"candidate ran {len(candidate_trials)} trial(s), "
                           f"expected {len(reference_trials)}")
    reports = [compare_trial(ref, out) for ref, out in zip(reference_trials, candidate_trials)]
    for index, report in enumerate(reports):
        if not report["passed"]:
            return False, reports, f"trial {index}: {report['reason']}"
    return True, reports, ""


def reference_problem(trials: list, first_index: int = 0) -> str:
    """Why reference outputs cannot be used (NaN), or ''."""
    for index, trial in enumerate(trials, start=first_index):
        for out in trial:
            if isinstance(out, torch.Tensor) and out.is_floating_point() and bool(torch.isnan(out).any()):
                return f"the reference output of trial {index} holds NaN"
    return ""
