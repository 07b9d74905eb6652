"""A running cell's heartbeat file: who runs it (job id) and how far it is, for ``clusterbench status``.

Written by the process holding the cell's lock at each progress report (every epoch of a
deep run); whether the cell is still running is told by its lock, not by this file.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Callable

from clusterbench.results.io import atomic_write_json

HEARTBEAT = "heartbeat.json"


def job_id() -> str:
    """SLURM's array job and task, else this process on this host."""
    env = os.environ
    if env.get("SLURM_ARRAY_JOB_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env.get('SLURM_ARRAY_TASK_ID', '0')}"
    if env.get("SLURM_JOB_ID"):
        return env["SLURM_JOB_ID"]
    return f"pid {os.getpid()} on {socket.gethostname()}"


def beating(run_dir: Path, then: Callable[[float, str], None]) -> Callable[[float, str], None]:
    """A progress callback that writes the heartbeat, then calls ``then``."""
    who = job_id()

    def update(frac: float, msg: str) -> None:
        try:
            atomic_write_json(run_dir / HEARTBEAT, {"job": who, "progress": frac, "message": msg,
                                                    "updated": time.time()})
        except OSError:  # a full or flaky disk must not fail the run for a status line
            pass
        then(frac, msg)
    return update


def read_heartbeat(run_dir: Path) -> dict[str, Any] | None:
    try:
        beat = json.loads((run_dir / HEARTBEAT).read_text())
    except (OSError, ValueError):
        return None
    return beat if isinstance(beat, dict) else None
