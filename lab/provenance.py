"""Provenance of a store: package version, git commit, host, times and the plan's hash.

Pure helpers with no store access; :mod:`lab.store` writes what they return into a store's group
attributes, and the session runner and analysis runners stamp their records with :func:`utc_now`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any


def git_commit() -> str | None:
    """Commit of the source tree this package runs from, or None outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
            capture_output=True, text=True, timeout=5, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def package_version() -> str:
    """Installed version of elastolab, or ``"0+unknown"`` when running from a bare source tree."""
    try:
        return version("elastolab")
    except PackageNotFoundError:
        return "0+unknown"


def utc_now() -> str:
    """Current UTC time as ISO 8601 with seconds (``2026-01-01T12:00:00+00:00``)."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def plan_hash(plan: Any) -> str:
    """SHA-256 of a JSON-serialisable plan (sorted keys): identifies the plan of a store."""
    blob = json.dumps(plan, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def provenance() -> dict[str, Any]:
    """Store attributes that say which code, on which host, created a store and when."""
    return {
        "elastolab_version": package_version(),
        "git_commit": git_commit(),
        "host": platform.node(),
        "python": platform.python_version(),
        "created_utc": utc_now(),
    }
