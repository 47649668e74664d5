"""The README's examples run as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def example(name: str) -> str:
    match = re.search(rf"<!-- example: {name} -->\s*```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert match, f"no example {name!r} in the README"
    return match.group(1)


@pytest.mark.slow  # a process that records from the fake exchange for seconds
@pytest.mark.timeout(60)
def test_the_embedding_example_runs(tmp_path: Path) -> None:
    script = tmp_path / "embed.py"
    script.write_text(example("embed"), encoding="utf-8")
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=50)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert sum(line.startswith(("BTCUSDT ", "ETHUSDT ")) for line in lines) >= 10
    assert "candles written" in lines[-1]
    assert (tmp_path / "example-data" / "market=usdt_futures").is_dir()


@pytest.mark.timeout(60)
def test_the_seams_example_runs(tmp_path: Path) -> None:
    script = tmp_path / "seams.py"
    script.write_text(example("seams"), encoding="utf-8")
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=50)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "[60000, 120000, 180000]"
