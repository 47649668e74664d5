"""Suite-wide hooks: the Hypothesis profile, the ``slow`` marker by directory, the figures tests report.

``python -m pytest -m "not slow"`` is the fast loop; ``python -m pytest`` runs everything.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
from hypothesis import settings

from e2e_support import FIGURES

# CI (which sets CI=true) runs the same examples every time, so a red build is reproducible and a
# failure prints the blob that replays it; a developer's runs explore new examples. Neither has a
# deadline: on a loaded machine an example's time says nothing about the code. HYPOTHESIS_PROFILE
# picks one explicitly.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))

#: Every test under these directories is ``slow``: end-to-end runs of processes, chaos, benchmarks.
SLOW_DIRS = tuple(Path(__file__).parent / name for name in ("e2e", "bench"))


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if any(item.path.is_relative_to(directory) for directory in SLOW_DIRS):
            item.add_marker(pytest.mark.slow)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    for name, figures in config.stash.get(FIGURES, {}).items():
        terminalreporter.write_sep("-", f"figures: {name}")
        terminalreporter.write_line(json.dumps(figures, sort_keys=True))


#: The only hosts a test may resolve: the fake exchange and its peers listen on loopback.
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never touch real Binance: resolving any other host fails the call, loudly, in this process
    (a default endpoint left in a test's config would otherwise try the real exchange)."""
    real = socket.getaddrinfo

    def getaddrinfo(host: object, *args: object, **kwargs: object) -> object:
        name = host.decode() if isinstance(host, bytes) else host
        if name is not None and name not in LOOPBACK:
            raise OSError(f"a test tried to reach {name!r}: tests stay on loopback")
        return real(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
