"""Helpers shared by the benchmarks: the machine's description and the report's two forms."""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from typing import Any


def environment() -> dict[str, Any]:
    """What the figures were measured on; the VM's speed drifts, so compare ratios from one run."""
    import pandas
    import pyarrow

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "pyarrow": pyarrow.__version__,
        "pandas": pandas.__version__,
    }


def emit(results: Mapping[str, Any], lines: Sequence[str], *, as_json: bool) -> None:
    """Print ``results`` as one JSON object, or ``lines`` for a person."""
    if as_json:
        json.dump(results, sys.stdout, sort_keys=True)
        sys.stdout.write("\n")
    else:
        sys.stdout.write("\n".join(lines) + "\n")
