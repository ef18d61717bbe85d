"""What a run was made from: code version, data version and package versions."""

from __future__ import annotations

import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

# Distributions whose versions can change a run's numbers.
PACKAGES = ("optstudy", "torch", "pytorch-lightning", "torchmetrics", "hydra-core", "numpy")


def git_state(root: Path) -> dict[str, Any]:
    """The commit checked out in ``root`` and whether tracked files differ from it."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"git_commit": commit, "git_dirty": bool(status) if status is not None else None}


def package_versions() -> dict[str, str | None]:
    """Installed versions of :data:`PACKAGES` (None when one is missing)."""
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def provenance(root: Path, data_name: str, data_fingerprint: str) -> dict[str, Any]:
    """Everything needed to tell whether two runs were made from the same inputs."""
    return {
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **git_state(root),
        "data": {"name": data_name, "fingerprint": data_fingerprint},
        "packages": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
