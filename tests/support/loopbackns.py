"""Running a test's helper script inside a network namespace that has only loopback.

Why: the Ray executor test and the viewer's browser test must prove that nothing leaves the
machine whatever their servers, Ray or Chromium bind to; inside ``unshare -n`` with ``lo`` up
nothing else can be reached. Creating the namespace needs root (CI is); elsewhere the tests
skip with the reason ``namespace_problem`` gives.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def namespace_problem() -> str | None:
    """Why a loopback-only namespace cannot be made here, or None when it can."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare/ip (util-linux, iproute2) are needed for the loopback-only namespace"
    if subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode != 0:
        return "cannot create a network namespace here (needs root, as in CI)"
    return None


def run_offline(
    script: Path, *args: object, env: dict[str, str] | None = None, timeout: float
) -> subprocess.CompletedProcess:
    """``python script args...`` inside the namespace, with the repository and tests/ on the
    path, one OpenMP thread and ``env`` added to this process's environment."""
    full = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]),
        "OMP_NUM_THREADS": "1",
        **(env or {}),
    }
    words = " ".join(f'"{a}"' for a in (sys.executable, script, *args))
    return subprocess.run(
        ["unshare", "-n", "sh", "-c", f"ip link set lo up && exec {words}"],
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
