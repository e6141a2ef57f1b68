"""Reports: JSON (every number), Markdown (table + fast_p), a PNG of speedups, a console table."""
from __future__ import annotations

import json
import math
from pathlib import Path

STATUS_TEXT = {
    "correct": "correct", "incorrect": "INCORRECT", "anticheat": "ANTI-CHEAT", "error": "ERROR",
    "crash": "CRASH", "timeout": "TIMEOUT", "oom": "OOM", "no_candidate": "no candidate",
    "reference_error": "REFERENCE ERROR",
}


def _ms(timing: dict | None) -> str:
    if not timing:
        return "-"
    value = timing.get("median_ms")
    if value is None:
        return "-"
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def _speedup(value: float | None, suspicious: bool = False) -> str:
    if value is None:
        return "-"
    text = f"{value:.2f}x" if value >= 0.1 else f"{value:.2g}x"
    return text + (" (suspicious)" if suspicious and value > 10 else "")


def _max_err(row: dict) -> str:
    diffs = [t.get("max_abs_diff") for t in row.get("trials", []) if t.get("max_abs_diff") is not None]
    return f"{max(diffs):.2g}" if diffs else "-"


def table_rows(results: list[dict], note_limit: int = 140) -> list[list[str]]:
    rows = []
    for r in results:
        note = r["failure"] or ""
        if r.get("compile_error"):
            note = (note + "; " if note else "") + f"torch.compile failed: {r['compile_error']}"
        if r["status"] == "no_candidate":
            note = "reference only"
        rows.append([
            r["id"], (r.get("dtype") or "-").replace("torch.", ""), STATUS_TEXT.get(r["status"], r["status"]),
            _max_err(r), _ms(r["timing"].get("reference_eager")), _ms(r["timing"].get("reference_compile")),
            _ms(r["timing"].get("candidate")), _speedup(r["speedup_eager"], r["suspicious"]),
            _speedup(r["speedup_compile"], r["suspicious"]), _shorten(note, note_limit),
        ])
    return rows


TABLE_HEADER = ["problem", "dtype", "status", "max abs err", "eager ms", "compile ms", "candidate ms",
                "vs eager", "vs compile", "notes"]


def _shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fmt_share(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def write_json(report: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=_json_default, allow_nan=True))


def _json_default(value):
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def header_lines(meta: dict) -> list[str]:
    sizes = meta["sizes"]
    size_note = " (quick sizes: the default on the CPU; --full for LLM sizes)" if (
        sizes == "quick" and meta["device"] == "cpu") else ""
    clock = "CPU wall-clock time" if meta["clock"] == "cpu-wall" else "GPU time from CUDA events"
    return [
        f"device: {meta['device']} ({meta['device_name']}), torch {meta['torch']}",
        f"sizes: {sizes}{size_note}",
        f"times: {clock}, {meta['timing_protocol']}; milliseconds",
        f"correctness: {meta['trials']} trials with fresh seeded inputs, KernelBench tolerances "
        f"(tilekit.tolerances.KERNELBENCH); outputs poisoned: {meta['poison']}",
    ]


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
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(markdown(report))


def write_plot(report: dict, path: Path) -> None:
    """Horizontal bars of speedup vs eager (and vs torch.compile) per problem with a candidate."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["results"] if r["candidate_path"]]
    labels = [r["id"] for r in rows]
    eager = [r["speedup_eager"] or 0.0 for r in rows]
    compiled = [r["speedup_compile"] or 0.0 for r in rows]
    height = max(2.5, 0.35 * len(rows) + 1.5)
    fig, ax = plt.subplots(figsize=(10, height))
    if rows:
        ys = range(len(rows))
        ax.barh([y - 0.2 for y in ys], eager, height=0.4, label="vs PyTorch eager", color="#4c72b0")
        ax.barh([y + 0.2 for y in ys], compiled, height=0.4, label="vs torch.compile", color="#dd8452")
        ax.set_yticks(list(ys), labels, fontsize=8)
        ax.invert_yaxis()
        ax.axvline(1.0, color="black", linewidth=0.8, linestyle="--")
        for y, r in zip(ys, rows):
            if not r["correct"]:
                ax.text(0.02, y, STATUS_TEXT.get(r["status"], r["status"]), va="center", fontsize=7,
                        color="#c44e52", transform=ax.get_yaxis_transform())
        finite = [v for v in eager + compiled if v > 0 and math.isfinite(v)]
        if finite and max(finite) / min(finite) > 50:
            ax.set_xscale("log")
        ax.legend(loc="lower right", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no candidates: nothing to compare", ha="center", va="center", transform=ax.transAxes)
        ax.set_yticks([])
    meta = report["meta"]
    ax.set_xlabel("speedup over PyTorch (higher is better; no bar: incorrect, failed or not timed)")
    ax.set_title(f"tilekit bench: {meta['device_name']} ({meta['sizes']} sizes, {meta['clock']})", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
    for row in table_rows(report["results"], note_limit=90):
        table.add_row(*(Text(cell) for cell in row))      # Text: "[variant]" is not rich markup
    console.print(table)
    fast = ", ".join(f"fast_{p}={_fmt_share(v)}" for p, v in summary["fast_p"].items())
    console.print(f"score over {summary['scored']} scored problem(s): {fast}", highlight=False)
    if summary.get("fast_p_compile"):
        fast_c = ", ".join(f"fast_{p}={_fmt_share(v)}" for p, v in summary["fast_p_compile"].items())
        console.print(f"vs torch.compile: {fast_c}", highlight=False)
    if summary["suspicious"]:
        console.print("suspicious speedups (> 10x): " + ", ".join(summary["suspicious"]), highlight=False)
