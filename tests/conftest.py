"""Suite-wide hooks: the figures tests report (chaos counts, …) close the run's summary."""

from __future__ import annotations

import json

import pytest

from e2e_support import FIGURES


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    for name, figures in config.stash.get(FIGURES, {}).items():
        terminalreporter.write_sep("-", f"figures: {name}")
        terminalreporter.write_line(json.dumps(figures, sort_keys=True))
