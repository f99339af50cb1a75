"""``save_results``: evaluation results as a JSON file of ``evaluate.save``'s shape, written atomically.

``evaluate.save(path, **results)`` adds ``_timestamp``, ``_git_commit_hash``,
``_evaluate_version``, ``_python_version`` and ``_interpreter_path`` to what it is given,
but writes in place and lets ``git`` print "fatal: not a git repository" outside one.
This writes the same keys (same meanings: the commit of the working directory's
repository, or None) into a hidden temporary file next to the target, fsyncs it and
renames it over the target, so a reader never sees half a file.
"""
from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._io import fsync_path, write_text_atomic

__all__ = ["save_results", "SYSTEM_KEYS"]

#: The keys ``evaluate.save`` adds to what it is given.
SYSTEM_KEYS = ("_timestamp", "_git_commit_hash", "_evaluate_version", "_python_version", "_interpreter_path")


def _target(path: str | os.PathLike, now: datetime.datetime) -> Path:
    """As ``evaluate.save``: a path with a suffix is the file, one without is a folder for ``result-<time>.json``."""
    path = Path(path).expanduser()
    if path.suffix:
        return path
    return path / f"result-{now.strftime('%Y_%m_%d-%H_%M_%S')}.json"


def _git_commit_hash() -> str | None:
    """HEAD of the repository holding the working directory (what ``evaluate.save`` records), or None."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=os.getcwd(), capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def save_results(results: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write ``results`` (a flat dict, e.g. from :func:`~fggp_hub.eval.evaluate_model`) as JSON; returns the file.

    ``path`` ending in a suffix (``out/eval.json``) is the file; otherwise it is a folder
    that gets ``result-<time>.json``, as with ``evaluate.save``.
    """
    import evaluate

    now = datetime.datetime.now()
    data = json.loads(json.dumps(dict(results), default=str))  # JSON-able (paths, dtypes -> str)
    data.update({
        "_timestamp": now.isoformat(),
        "_git_commit_hash": _git_commit_hash(),
        "_evaluate_version": evaluate.__version__,
        "_python_version": sys.version,
        "_interpreter_path": sys.executable,
    })
    target = _target(path, now)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(target, json.dumps(data, indent=2) + "\n")
    fsync_path(target.parent)
    return target
