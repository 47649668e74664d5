"""core/ is pure: no trio, no network or Arrow library, no file or OS-level I/O. Proved, not promised."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import trio_klines.core

pytestmark = pytest.mark.timeout(60)

CORE = Path(trio_klines.core.__file__).parent
MODULES = sorted(f"trio_klines.core.{p.stem}" for p in CORE.glob("*.py") if p.stem != "__init__")
#: Libraries a pure module must not even import indirectly.
LIBRARIES = ("trio", "trio_websocket", "wsproto", "websockets", "httpx", "httpcore", "hypercorn", "pyarrow", "pandas")
#: Standard modules that do I/O, threads or processes: a core module must not import them itself.
IO_MODULES = {"os", "io", "pathlib", "shutil", "tempfile", "socket", "ssl", "select", "selectors", "subprocess",
              "threading", "concurrent", "asyncio", "mmap", "fcntl", "signal", "urllib.request"}  # fmt: skip
#: Calls that read or write files whatever module they come from.
IO_CALLS = {"open", "read_text", "write_text", "read_bytes", "write_bytes", "fsync", "unlink", "mkdir", "rename"}


def test_every_core_module_is_checked() -> None:
    assert {"trio_klines.core.markets", "trio_klines.core.parse", "trio_klines.core.gaps"} <= set(MODULES)


def test_core_imports_no_io_library() -> None:
    code = (
        "import importlib, json, sys\n"
        f"for name in {MODULES!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in " + repr(LIBRARIES) + ")))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=50)
    assert json.loads(out.stdout) == []


@pytest.mark.parametrize("module", MODULES)
def test_core_module_does_no_io(module: str) -> None:
    tree = ast.parse((CORE / f"{module.rsplit('.', 1)[1]}.py").read_text(encoding="utf-8"))
    imported: set[str] = set()
    calls: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported.add(node.module)
        elif isinstance(node, ast.Call):
            func = node.func
            calls.add(func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else "")
    bad = {m for m in imported if m in IO_MODULES or m.split(".")[0] in IO_MODULES | set(LIBRARIES)}
    assert not bad, f"{module} imports {sorted(bad)}"
    assert not calls & IO_CALLS, f"{module} calls {sorted(calls & IO_CALLS)}"
