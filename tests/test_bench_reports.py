"""Reports: the timing spread beside the median, shapes in every row, notes never cut in the
Markdown, numbers on the PNG's bars, eager times plotted for a reference-only run; and the worker's
input checksum without a float64 copy."""
import json
import subprocess
import sys

from tilekit.bench import report as reports
from tilekit.bench.runner import summarise

LONG_NOTE = "anti-cheat: " + "; ".join(f"violation number {i} at some line" for i in range(30))


def _row(name, status="correct", speedup=None, candidate=True, failure=""):
    timing = {"reference_eager": {"median_ms": 4.0, "min_ms": 2.66, "max_ms": 113.0}}
    if candidate and status == "correct":
        timing["candidate"] = {"median_ms": 2.0, "min_ms": 1.5, "max_ms": 2.5}
    return {"id": f"level1/{name}", "family": "level1", "name": name, "variant": None, "status": status,
            "correct": status == "correct", "failure": failure, "dtype": "torch.float32", "trials": [],
            "timing": timing, "speedup_eager": speedup, "speedup_compile": None, "suspicious": False,
            "candidate_path": f"/c/{name}.py" if candidate else None, "shapes": [[128, 4093], [4093]],
            "scaled": {"dim": [16383, 4093]}, "warnings": [], "compile_error": None}


def _report(rows):
    meta = {"device": "cpu", "device_name": "test CPU", "torch": "x", "sizes": "the files' own sizes",
            "clock": "cpu-wall", "timing_protocol": "median", "trials": 2, "poison": True, "precision": None,
            "policy": "strict", "started": "now", "duration_s": 1.0}
    return {"meta": meta, "summary": summarise(rows, compile_baseline=False), "results": rows}


def test_markdown_shows_spread_shapes_and_whole_notes():
    report = _report([_row("1_A", speedup=2.0), _row("2_B", status="anticheat", failure=LONG_NOTE)])
    text = reports.markdown(report)
    assert "4 (2.66–113)" in text and "2 (1.5–2.5)" in text                 # median (min–max)
    assert "128x4093, 4093 (shrunk: dim 16383→4093)" in text
    assert LONG_NOTE in text                                               # never truncated
    assert "policy: strict" in text


def _bar_labels(fig):
    return [t.get_text() for ax in fig.axes for t in ax.texts if t.get_text()]


def test_plot_puts_speedups_on_bars_and_plots_reference_only_runs():
    import matplotlib.pyplot as plt
    fig = reports.plot_figure(_report([_row("1_A", speedup=2.0), _row("2_B", speedup=0.5)]))
    assert "2.00x" in _bar_labels(fig) and "0.50x" in _bar_labels(fig)
    plt.close(fig)
    fig = reports.plot_figure(_report([_row("1_A", candidate=False, status="no_candidate")]))
    labels = _bar_labels(fig)
    assert "4 ms" in labels and len(fig.axes[0].patches) >= 1             # eager times, not an empty picture
    plt.close(fig)


def test_reports_are_written_atomically(tmp_path):
    path = tmp_path / "results.json"
    reports.write_json(_report([_row("1_A", speedup=2.0)]), path)
    assert json.loads(path.read_text())["results"][0]["id"] == "level1/1_A"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]         # no temporary left behind


def test_input_checksum_makes_no_float64_copy():
    # 32 Mi float32 elements (128 MiB): a float64 copy would add 256 MiB to the peak.
    script = (
        "import resource, torch\n"
        "from tilekit.bench.worker import input_checksum\n"
        "x = torch.randn(32 * 2**20)\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "summary = input_checksum([x, 3])\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "assert summary[1] == '3' and abs(summary[0][2] - float(x.double().sum())) < 1e-3 * x.numel() ** 0.5\n"
        "print((after - before) // 1024)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    grew_mib = int(done.stdout.strip())
    assert grew_mib < 64, f"the checksum grew the peak by {grew_mib} MiB"
