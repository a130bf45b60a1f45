"""CPU time of the machine, the API's workers and PostgreSQL, read from /proc."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from bench.server import Server


def cpu_ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
    return total


def postgres_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() in ("postgres", "postmaster"):
                    pids.append(int(entry.name))
    return pids


def machine_ticks() -> list[int]:
    """The machine's jiffies: user, nice, system, idle, iowait, irq, softirq, steal, ..."""
    return [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]


def machine_busy(seconds: float) -> float:
    """The fraction of the machine's CPU time that was busy over the next ``seconds``."""
    before = machine_ticks()
    time.sleep(seconds)
    ticks = [b - a for a, b in zip(before, machine_ticks(), strict=False)]
    return round(1 - (ticks[3] + ticks[4]) / max(sum(ticks), 1), 3)


class CpuMeter:
    """Cores used by the machine, the gunicorn workers and PostgreSQL over an interval, and by
    the processes in ``extra`` (name -> pids, reported as ``<name>_cores``)."""

    def __init__(self, server: Server, extra: dict[str, list[int]] | None = None) -> None:
        self.server = server
        self.extra = extra or {}
        self.hz = os.sysconf("SC_CLK_TCK")

    def __enter__(self) -> CpuMeter:
        return self.start()

    def start(self) -> CpuMeter:
        """From now (``run_clients`` calls it once the clients are started and connected)."""
        self.started = time.monotonic()
        self.workers = self.server.worker_pids()
        self.postgres = postgres_pids()
        self.machine0 = machine_ticks()
        self.api0 = cpu_ticks(self.workers)
        self.pg0 = cpu_ticks(self.postgres)
        self.extra0 = {name: cpu_ticks(pids) for name, pids in self.extra.items()}
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        wall = time.monotonic() - self.started
        ticks = [b - a for a, b in zip(self.machine0, machine_ticks(), strict=False)]
        total = max(sum(ticks), 1)
        idle = ticks[3] + ticks[4]
        # Backends that connected during the interval count whole.
        new_backends = sorted(set(postgres_pids()) - set(self.postgres))
        postgres = cpu_ticks(self.postgres) - self.pg0 + cpu_ticks(new_backends)
        self.result = {
            "seconds": round(wall, 3),
            "machine_busy_fraction": round((total - idle) / total, 3),
            "machine_softirq_fraction": round(ticks[6] / total, 3),
            "api_workers_cores": round((cpu_ticks(self.workers) - self.api0) / self.hz / wall, 2),
            "postgres_cores": round(postgres / self.hz / wall, 2),
        }
        for name, pids in self.extra.items():
            used = cpu_ticks(pids) - self.extra0[name]
            self.result[f"{name}_cores"] = round(used / self.hz / wall, 2)
