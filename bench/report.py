"""Reports: JSON (every number), Markdown (table + fast_p), a PNG of speedups, a console table.

Every file is written atomically (a temporary file renamed over the target), by the parent only.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from ..backends import cpu_default_line

STATUS_TEXT = {
    "correct": "correct", "incorrect": "INCORRECT", "anticheat": "ANTI-CHEAT", "error": "ERROR",
    "crash": "CRASH", "timeout": "TIMEOUT", "oom": "OOM", "no_candidate": "no candidate",
    "reference_error": "REFERENCE ERROR", "skipped": "skipped",
}


def _num(value: float) -> str:
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def _ms(timing: dict | None) -> str:
    """The median, with the spread of the runs (min-max) beside it."""
    if not timing or timing.get("median_ms") is None:
        return "-"
    text = _num(timing["median_ms"])
    if timing.get("min_ms") is not None and timing.get("max_ms") is not None:
        text += f" ({_num(timing['min_ms'])}–{_num(timing['max_ms'])})"
    return text


def shapes_text(row: dict) -> str:
    """The input shapes actually used, and what --max-elements changed."""
    shapes = row.get("shapes")
    text = ", ".join("x".join(str(d) for d in shape) or "scalar" for shape in shapes) if shapes else "-"
    if row.get("scaled"):
        text += " (shrunk: " + ", ".join(f"{k} {old}→{new}" for k, (old, new) in row["scaled"].items()) + ")"
    return text


def _speedup(value: float | None, suspicious: bool = False) -> str:
    if value is None:
        return "-"
    text = f"{value:.2f}x" if value >= 0.1 else f"{value:.2g}x"
    return text + (" (suspicious)" if suspicious and value > 10 else "")


def _max_err(row: dict) -> str:
    diffs = [t.get("max_abs_diff") for t in row.get("trials", []) if t.get("max_abs_diff") is not None]
    return f"{max(diffs):.2g}" if diffs else "-"


def table_rows(results: list[dict], note_limit: int | None = None) -> list[list[str]]:
    """One list of cells per row; notes are cut to ``note_limit`` characters only when given."""
    rows = []
    for r in results:
        note = r["failure"] or ""
        if r["status"] == "no_candidate":
            note = "reference only"
        if r.get("compile_error"):
            note = (note + "; " if note else "") + f"torch.compile failed: {r['compile_error']}"
        if r.get("warnings"):
            note = (note + "; " if note else "") + "warnings: " + "; ".join(r["warnings"])
        if r.get("resumed"):
            note = (note + "; " if note else "") + "from the resumed run"
        rows.append([
            r["id"], shapes_text(r), (r.get("dtype") or "-").replace("torch.", ""),
            STATUS_TEXT.get(r["status"], r["status"]), _max_err(r), _ms(r["timing"].get("reference_eager")),
            _ms(r["timing"].get("reference_compile")), _ms(r["timing"].get("candidate")),
            _speedup(r["speedup_eager"], r["suspicious"]), _speedup(r["speedup_compile"], r["suspicious"]),
            _shorten(note, note_limit),
        ])
    return rows


TABLE_HEADER = ["problem", "shapes", "dtype", "status", "max abs err", "eager ms (min–max)",
                "compile ms (min–max)", "candidate ms (min–max)", "vs eager", "vs compile", "notes"]


def _shorten(text: str, limit: int | None) -> str:
    text = " ".join(text.split())
    return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"


def _fmt_share(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _write_atomically(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_json(report: dict, path: Path) -> None:
    _write_atomically(path, json.dumps(report, indent=2, default=_json_default, allow_nan=True).encode())


def _json_default(value):
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def header_lines(meta: dict) -> list[str]:
    clock = "CPU wall-clock time" if meta["clock"] == "cpu-wall" else "GPU time from CUDA events"
    lines = [
        f"device: {meta['device']} ({meta['device_name']}), torch {meta['torch']}",
        f"sizes: {meta['sizes']} (each row lists the input shapes it used)",
        f"times: {clock}, {meta['timing_protocol']}; milliseconds, median (min–max)",
        f"correctness: {meta['trials']} trials with fresh seeded inputs, plus one randomly chosen timed call; "
        f"KernelBench tolerances (tilekit.tolerances.KERNELBENCH); outputs poisoned: {meta['poison']}",
        f"precision: {meta.get('precision') or 'as each file says'}; anti-cheat policy: {meta.get('policy', 'strict')}",
        cpu_default_line(),  # from the backend registry: the bench reports it without tilekit.ops
    ]
    if meta.get("interrupted"):
        lines.append(f"INTERRUPTED: {len(meta.get('remaining') or [])} problem(s) not run; "
                     "run the same command with --resume to finish")
    return lines


def markdown(report: dict) -> str:
    meta, summary, results = report["meta"], report["summary"], report["results"]
    lines = ["# tilekit bench report", ""]
    lines += [f"- {line}" for line in header_lines(meta)]
    lines += [f"- run: {meta['started']}, {meta['duration_s']:.1f} s", ""]
    counts = summary["status_counts"]
    lines += ["## Score", "",
              f"{summary['scored']} scored problem(s) (with a candidate) of {summary['problems']}; "
              + ", ".join(f"{STATUS_TEXT[k]}: {v}" for k, v in counts.items() if v), ""]
    has_compile = summary.get("fast_p_compile") is not None
    lines += ["| p | fast_p vs eager" + (" | fast_p vs torch.compile |" if has_compile else " |"),
              "|---|---" + ("|---|" if has_compile else "|")]
    for p, value in summary["fast_p"].items():
        row = f"| {p} | {_fmt_share(value)}"
        row += f" | {_fmt_share(summary['fast_p_compile'][p])} |" if has_compile else " |"
        lines.append(row)
    lines += ["", "fast_p: share of scored problems whose candidate is correct and more than p times faster "
              "(fast_0: correct). Speedups above 10x are flagged as suspicious.", ""]
    if summary["suspicious"]:
        lines += ["Suspicious speedups: " + ", ".join(summary["suspicious"]), ""]
    lines += ["## Problems", "", "| " + " | ".join(TABLE_HEADER) + " |", "|" + "---|" * len(TABLE_HEADER)]
    for row in table_rows(results):
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    lines.append("")
    return "\n".join(lines)


def write_markdown(report: dict, path: Path) -> None:
    _write_atomically(path, markdown(report).encode())


def _bars(ax, ys, values, offset, label, color, text) -> None:
    bars = ax.barh([y + offset for y in ys], values, height=0.4, label=label, color=color)
    ax.bar_label(bars, labels=[text(v) if v else "" for v in values], padding=2, fontsize=7)


def plot_figure(report: dict):
    """The figure: speedups vs eager and vs torch.compile per problem with a candidate, each bar
    labelled with its number; with no candidate at all, the reference times instead."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    meta = report["meta"]
    rows = [r for r in report["results"] if r["candidate_path"]]
    reference_only = not rows
    if reference_only:
        rows = [r for r in report["results"] if _median_of(r, "reference_eager")]
    fig, ax = plt.subplots(figsize=(10, max(2.5, 0.35 * len(rows) + 1.5)))
    ys = list(range(len(rows)))
    if reference_only and rows:
        eager = [_median_of(r, "reference_eager") or 0.0 for r in rows]
        compiled = [_median_of(r, "reference_compile") or 0.0 for r in rows]
        _bars(ax, ys, eager, -0.2, "PyTorch eager", "#4c72b0", lambda v: f"{_num(v)} ms")
        if any(compiled):
            _bars(ax, ys, compiled, 0.2, "torch.compile", "#dd8452", lambda v: f"{_num(v)} ms")
        ax.set_xlabel("reference time, ms (no candidates were run)")
    elif rows:
        eager = [r["speedup_eager"] or 0.0 for r in rows]
        compiled = [r["speedup_compile"] or 0.0 for r in rows]
        _bars(ax, ys, eager, -0.2, "vs PyTorch eager", "#4c72b0", _speedup)
        _bars(ax, ys, compiled, 0.2, "vs torch.compile", "#dd8452", _speedup)
        ax.axvline(1.0, color="black", linewidth=0.8, linestyle="--")
        for y, r in zip(ys, rows):
            if not r["correct"]:
                ax.text(0.02, y, STATUS_TEXT.get(r["status"], r["status"]), va="center", fontsize=7,
                        color="#c44e52", transform=ax.get_yaxis_transform())
        ax.set_xlabel("speedup over PyTorch (higher is better; no bar: incorrect, failed or not timed)")
    else:
        ax.text(0.5, 0.5, "nothing was timed", ha="center", va="center", transform=ax.transAxes)
    if rows:
        values = [v for patch in ax.patches if (v := patch.get_width()) > 0 and math.isfinite(v)]
        if values and max(values) / min(values) > 50:
            ax.set_xscale("log")
        ax.set_yticks(ys, [r["id"] for r in rows], fontsize=8)
        ax.invert_yaxis()
        ax.legend(loc="lower right", fontsize=8)
    else:
        ax.set_yticks([])
    ax.set_title(f"tilekit bench: {meta['device_name']} ({meta['clock']})", fontsize=10)
    fig.tight_layout()
    return fig


def _median_of(row: dict, key: str):
    timing = row["timing"].get(key)
    return timing.get("median_ms") if timing else None


def write_plot(report: dict, path: Path) -> None:
    import io

    import matplotlib.pyplot as plt
    fig = plot_figure(report)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    _write_atomically(path, buffer.getvalue())


def print_console(report: dict, console=None) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    import sys
    console = console or Console(width=None if sys.stdout.isatty() else 200)
    meta, summary = report["meta"], report["summary"]
    for line in header_lines(meta):
        console.print(line, highlight=False)
    table = Table(title="tilekit bench", show_lines=False)
    for column in TABLE_HEADER:
        table.add_column(column, overflow="fold", no_wrap=column in ("problem",))
    for row in table_rows(report["results"], note_limit=200):
        table.add_row(*(Text(cell) for cell in row))      # Text: "[variant]" is not rich markup
    console.print(table)
    fast = ", ".join(f"fast_{p}={_fmt_share(v)}" for p, v in summary["fast_p"].items())
    console.print(f"score over {summary['scored']} scored problem(s): {fast}", highlight=False)
    if summary.get("fast_p_compile"):
        fast_c = ", ".join(f"fast_{p}={_fmt_share(v)}" for p, v in summary["fast_p_compile"].items())
        console.print(f"vs torch.compile: {fast_c}", highlight=False)
    if summary["suspicious"]:
        console.print("suspicious speedups (> 10x): " + ", ".join(summary["suspicious"]), highlight=False)
