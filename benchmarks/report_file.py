"""The file each benchmark leaves behind: its report as indented JSON (in ``benchmarks/results/``
unless ``--out`` names another place)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_report(out: Path, report: dict[str, Any]) -> None:
    """Write ``report`` to ``out`` as indented JSON, creating its folder if needed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
