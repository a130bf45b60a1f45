"""What every part of the bench uses: where the project is, how it fails, how it logs."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


class BenchError(Exception):
    """The benchmark cannot go on; the message says why."""


def log(message: str) -> None:
    stamp = datetime.now().strftime("%H:%M:%S")
    print(f"[{stamp}] {message}", flush=True)


def spawn(
    command: Sequence[str], log_path: Path, env: Mapping[str, str], mode: str = "wb"
) -> subprocess.Popen[bytes]:
    """A process of the bench's own (server, worker) in a session of its own, logging to a file,
    so that stopping it stops its children too."""
    with log_path.open(mode) as log_file:
        return subprocess.Popen(
            list(command),
            cwd=ROOT,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
