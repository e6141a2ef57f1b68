"""Every ```python block in README.md and docs/*.md runs as written (each block in its own file, since
tilekit reads kernel source from files)."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]  # docs/ops/<family>.md too
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _blocks():
    for doc in DOCS:
        for i, m in enumerate(BLOCK.finditer(doc.read_text())):
            line = doc.read_text()[:m.start()].count("\n") + 1
            yield pytest.param(doc, m.group(1), id=f"{doc.relative_to(ROOT)}:{line}")


def test_docs_have_examples():
    assert sum(1 for _ in _blocks()) >= 8


@pytest.mark.parametrize("doc,code", list(_blocks()))
def test_doc_example_runs(doc, code, tmp_path):
    script = tmp_path / "example.py"
    script.write_text(code)
    env = {**os.environ, "TILEKIT_CACHE_DIR": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                       timeout=600, env=env)
    assert r.returncode == 0, f"example in {doc.name} failed:\n{code}\n--- stderr ---\n{r.stderr[-3000:]}"
