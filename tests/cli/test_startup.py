"""Start-up: ``--help`` and ``import trio_klines`` load no heavy library; ``--version``; the console script.

Speed is shown by the modules a command loads, not timed: a wall-clock bound fails on a loaded machine.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

from trio_klines.cli import COMMANDS, main, run

pytestmark = pytest.mark.timeout(60)

#: What ``--help`` must not import: the data stack, the async stack, the servers and the wire decoder.
HEAVY = frozenset({"pandas", "pyarrow", "numpy", "trio", "httpx", "hypercorn", "msgspec", "tqdm"})


def run_python(*args: str) -> tuple[set[str], str]:
    """Run ``python -X importtime ARGS``: the top-level packages it imported, and its standard output."""
    proc = subprocess.run([sys.executable, "-X", "importtime", *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # -X importtime writes "import time: self | cumulative | dotted.name" to stderr for every import.
    lines = [line for line in proc.stderr.splitlines() if line.startswith("import time:")]
    return {line.rsplit("|", 1)[1].strip().split(".")[0] for line in lines}, proc.stdout


def imported_by(*args: str) -> set[str]:
    return run_python(*args)[0]


def test_help_loads_no_heavy_library() -> None:
    loaded = imported_by("-m", "trio_klines", "--help")
    assert "trio_klines" in loaded  # the probe sees our own imports
    assert loaded.isdisjoint(HEAVY), sorted(loaded & HEAVY)


def test_import_trio_klines_loads_no_heavy_library() -> None:
    loaded = imported_by("-c", "import trio_klines")
    assert loaded.isdisjoint(HEAVY), sorted(loaded & HEAVY)


@pytest.mark.parametrize("command", [c.name for c in COMMANDS if c.name != "exchange"])
def test_each_commands_help_loads_no_heavy_library(command: str) -> None:
    loaded = imported_by("-m", "trio_klines", command, "--help")
    assert loaded.isdisjoint(HEAVY), sorted(loaded & HEAVY)


def test_the_exchange_help_lists_the_fault_keys_without_the_server() -> None:
    # Its epilog is made from the fake exchange's fault table, only when the help is printed.
    loaded, out = run_python("-m", "trio_klines", "exchange", "--help")
    assert "fault keys:" in out and "rest429" in out
    assert loaded.isdisjoint(HEAVY - {"msgspec"}), sorted(loaded & HEAVY)  # the fault table's module decodes frames


def test_version_prints_the_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"trio-klines {importlib.metadata.version('trio-klines')}\n"


def test_the_console_script_is_declared_and_exits_with_mains_status(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (script,) = importlib.metadata.entry_points(group="console_scripts", name="trio-klines")
    assert script.load() is run
    monkeypatch.setattr(sys, "argv", ["trio-klines", "status", "--data", str(tmp_path / "none")])
    with pytest.raises(SystemExit) as exited:
        run()
    assert exited.value.code == 1
    assert "trio-klines status: error: no store at" in capsys.readouterr().err


def test_the_installed_script_runs() -> None:
    scripts = Path(sys.executable).parent
    script = next((p for p in (scripts / "trio-klines", scripts / "trio-klines.exe") if p.exists()), None)
    if script is None:
        pytest.skip("the package is not installed into this interpreter's scripts directory")
    proc = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("trio-klines ")
