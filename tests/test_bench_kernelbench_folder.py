"""`tilekit bench` on a folder shaped like a KernelBench checkout: module-level size constants and no
QUICK, a non-problem file, numeric names. --max-elements shrinks and records the shapes, -k selects,
the order is numeric, and a run interrupted with Ctrl-C then --resume'd completes with no duplicate."""
import json
import os
import signal
import threading
import time

import pytest

from tilekit.bench import shrink
from tilekit.bench.cli import main

PROBLEMS = {
    "1_Square_matmul.py": '''
import torch
import torch.nn as nn

N = 2048


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, A, B):
        return torch.matmul(A, B)


def get_inputs():
    return [torch.randn(N, N), torch.randn(N, N)]


def get_init_inputs():
    return []
''',
    "2_Softmax.py": '''
import torch
import torch.nn as nn

batch_size = 16
dim = 16381


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x):
        return torch.softmax(x, dim=1)


def get_inputs():
    return [torch.randn(batch_size, dim)]


def get_init_inputs():
    return []
''',
    "3_Grouped_conv.py": '''
import torch
import torch.nn as nn

batch_size = 16
in_channels = 64
out_channels = 32
groups = 8
kernel_size = 3
stride = 1
height = 257
width = 255


class Model(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride, groups):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, groups=groups)

    def forward(self, x):
        return self.conv(x)


def get_inputs():
    return [torch.randn(batch_size, in_channels, height, width)]


def get_init_inputs():
    return [in_channels, out_channels, kernel_size, stride, groups]
''',
    "10_Linear.py": '''
import torch
import torch.nn as nn

batch_size = 4093
in_features = 1024
out_features = 40


class Model(nn.Module):
    def __init__(self, in_features, out_features):
        super().__init__()
        self.fc = nn.Linear(in_features, out_features)

    def forward(self, x):
        return self.fc(x)


def get_inputs():
    return [torch.randn(batch_size, in_features)]


def get_init_inputs():
    return [in_features, out_features]
''',
    # Only integers <= 8: nothing may be scaled, so it cannot get under the limit.
    "11_Tiny_dims_huge.py": '''
import torch
import torch.nn as nn


class Model(nn.Module):
    def forward(self, x):
        return x.abs()


def get_inputs():
    return [torch.randn(8, 8, 8, 8, 8, 8, 8)]


def get_init_inputs():
    return []
''',
    "12_Excluded.py": '''
import torch
import torch.nn as nn

size = 64


class Model(nn.Module):
    def forward(self, x):
        return -x


def get_inputs():
    return [torch.randn(size)]


def get_init_inputs():
    return []
''',
}

# A prompt template, as KernelBench keeps beside its problems: defines Model, but is no problem.
TEMPLATE = '''
PROMPT = """Write a kernel for the architecture below."""


class Model:
    pass
'''

CANDIDATES = {
    # Sleeps in its first call while the flag file exists, so the test can interrupt it mid-run.
    "2_Softmax.py": '''
import os
import time

import torch
import torch.nn as nn


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x):
        flag = os.environ.get("TILEKIT_BENCH_TEST_SLOW")
        if flag and os.path.exists(flag):
            open(flag + ".sleeping", "w").close()
            time.sleep(120)
        e = (x - x.amax(dim=1, keepdim=True)).exp()
        return e / e.sum(dim=1, keepdim=True)
''',
    # Keeps nn.Linear: a warning under --policy kernelbench, as KernelBench does.
    "10_Linear.py": '''
import torch.nn as nn


class ModelNew(nn.Module):
    def __init__(self, in_features, out_features):
        super().__init__()
        self.fc = nn.Linear(in_features, out_features)

    def forward(self, x):
        return self.fc(x)
''',
}


@pytest.fixture(scope="module")
def kernelbench(tmp_path_factory):
    root = tmp_path_factory.mktemp("KernelBench")
    level = root / "KernelBench" / "level1"
    level.mkdir(parents=True)
    for name, source in PROBLEMS.items():
        (level / name).write_text(source)
    (root / "KernelBench" / "prompt_template.py").write_text(TEMPLATE)
    candidates = root / "candidates"
    candidates.mkdir()
    for name, source in CANDIDATES.items():
        (candidates / name).write_text(source)
    return root, candidates


def _arguments(root, candidates, out):
    return ["--problems", str(root), "--candidates", str(candidates), "--out-dir", str(out), "--max-elements",
            "200000", "-k", "not excluded", "--no-compile", "--trials", "2", "--cpu-budget", "0.02",
            "--policy", "kernelbench", "--precision", "fp16"]


def test_interrupted_then_resumed_run_on_a_kernelbench_folder(kernelbench, tmp_path, capsys):
    root, candidates = kernelbench
    out, flag = tmp_path / "out", tmp_path / "slow.flag"
    flag.write_text("")
    # Interrupted like a user's Ctrl-C: SIGINT, once row 1 is done and row 2's candidate is asleep.
    def interrupt_when_asleep():
        deadline = time.monotonic() + 150
        while not (tmp_path / "slow.flag.sleeping").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGINT)
    os.environ["TILEKIT_BENCH_TEST_SLOW"] = str(flag)
    watcher = threading.Thread(target=interrupt_when_asleep, daemon=True)
    watcher.start()
    try:
        code = main(_arguments(root, candidates, out))
    finally:
        del os.environ["TILEKIT_BENCH_TEST_SLOW"]
        watcher.join()
    err = capsys.readouterr().err
    assert code == 130, err[-3000:]
    assert "Traceback" not in err and "--resume" in err and "interrupted" in err
    partial = json.loads((out / "results.json").read_text())
    assert partial["meta"]["interrupted"] and [r["name"] for r in partial["results"]] == ["1_Square_matmul"]
    assert partial["meta"]["remaining"][0] == "level1/2_Softmax"
    assert "INTERRUPTED" in (out / "report.md").read_text() and (out / "speedups.png").stat().st_size > 0
    # The non-problem file was skipped with a note, not an error; rows print one plain line each.
    assert "skipping" in err and "prompt_template.py" in err and "[1/5] level1/1_Square_matmul" in err

    flag.unlink()
    capsys.readouterr()
    assert main(_arguments(root, candidates, out) + ["--resume"]) == 0          # resumed here, in-process
    assert "1 finished earlier (--resume)" in capsys.readouterr().err
    # Results made with other settings are refused, naming the setting.
    assert main(_arguments(root, candidates, out) + ["--resume", "--trials", "3"]) == 2
    assert "was run with trials=2" in capsys.readouterr().err
    report = json.loads((out / "results.json").read_text())
    rows = report["results"]
    names = [r["name"] for r in rows]
    assert names == ["1_Square_matmul", "2_Softmax", "3_Grouped_conv", "10_Linear", "11_Tiny_dims_huge"]
    assert rows[0].get("resumed") and not any(r.get("resumed") for r in rows[1:])
    assert not report["meta"]["interrupted"] and "--max-elements" in report["meta"]["sizes"]
    by_name = {r["name"]: r for r in rows}

    matmul = by_name["1_Square_matmul"]
    (old, new), = matmul["scaled"].values()
    assert old == 2048 and new % 16 == 0 and 3 * new * new <= 200_000
    assert matmul["shapes"] == [[new, new], [new, new]] and matmul["size"] == "shrunk"
    softmax = by_name["2_Softmax"]
    assert softmax["scaled"]["dim"][1] % 2 == 1                       # ragged stays ragged
    assert softmax["status"] == "correct" and softmax["dtype"] == "torch.float16"
    conv = by_name["3_Grouped_conv"]
    assert set(conv["scaled"]) <= {"batch_size", "in_channels", "height", "width"}
    channels = conv["shapes"][0][1]
    assert channels % 8 == 0 and conv["shapes"][0][2] % 2 == 1        # groups | channels; odd stays odd
    assert conv["status"] == "no_candidate"
    linear = by_name["10_Linear"]
    assert linear["status"] == "correct" and linear["policy"] == "kernelbench"
    assert any("torch.nn.Linear" in w for w in linear["warnings"])
    assert linear["shapes"][0][0] % 2 == 1 and linear["shapes"][0][1] % 16 == 0
    huge = by_name["11_Tiny_dims_huge"]
    assert huge["status"] == "skipped" and "not run at full size" in huge["failure"]

    markdown = (out / "report.md").read_text()
    assert f"{new}x{new}, {new}x{new} (shrunk: N 2048→{new})" in markdown
    assert huge["failure"] in markdown                                   # notes are never cut


def test_k_selects_and_listing_is_numeric(kernelbench, capsys):
    root, candidates = kernelbench
    assert main(["--list", "--problems", str(root), "--candidates", str(candidates), "-k", "Tiny or conv or (linear and not excluded)"]) == 0
    listed = [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == ["level1/3_Grouped_conv", "level1/10_Linear", "level1/11_Tiny_dims_huge"]   # 3 < 10 < 11
    assert main(["--list", "--problems", str(root), "-k", "nothing_matches"]) == 2
    assert "no problem matches" in capsys.readouterr().err


def _module(tmp_path, name, source):
    import importlib.util
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shrink_keeps_divisibility_between_scaled_sizes(tmp_path):
    module = _module(tmp_path, "heads", '''
import torch
import torch.nn as nn

batch = 16
heads = 40
hidden = 2560
seq = 1023
dim = 1


class Model(nn.Module):
    def forward(self, x):
        return x.softmax(dim=dim)


def get_inputs():
    return [torch.randn(batch, heads, seq, hidden // heads)]


def get_init_inputs():
    return []
''')
    plan = shrink.plan(module, 50_000)
    new = {**shrink.Problem(module).original, **{k: v[1] for k, v in plan["scaled"].items()}}
    assert {"heads", "hidden", "seq"} <= set(plan["scaled"]) and "dim" not in plan["scaled"]
    assert new["heads"] < 40 and new["hidden"] % new["heads"] == 0                      # heads | hidden held before
    assert new["heads"] % 8 == 0 and new["heads"] % 16 != 0 and new["seq"] % 2 == 1     # 40 = 8*5; 1023 odd
    assert plan["elements"][1] <= 50_000 < plan["elements"][0]
    assert plan["input_shapes"] == [[new["batch"], new["heads"], new["seq"], new["hidden"] // new["heads"]]]
    assert all(getattr(module, k) == v for k, v in shrink.Problem(module).original.items())   # module restored


def test_shrink_leaves_small_problems_and_refuses_unshrinkable_ones(tmp_path):
    small = _module(tmp_path, "small", PROBLEMS["12_Excluded.py"])
    assert shrink.plan(small, 1000)["scaled"] == {}
    huge = _module(tmp_path, "huge", PROBLEMS["11_Tiny_dims_huge.py"])
    with pytest.raises(shrink.ShrinkError, match="no module-level integer > 8"):
        shrink.plan(huge, 1000)
