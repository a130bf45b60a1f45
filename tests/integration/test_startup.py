"""Several server processes starting at once on a fresh database (gunicorn workers do)."""

from __future__ import annotations

import multiprocessing

import pytest

from adapters.settings import Settings
from api.bootstrap import bootstrap


def _start(url: str, barrier: multiprocessing.synchronize.Barrier) -> None:
    barrier.wait()
    ledger, keys, _ = bootstrap(Settings.from_environ({"DAIFUKU_DATABASE_URL": url}))
    ledger.close()
    keys.close()


@pytest.mark.parametrize("attempt", range(3))
def test_workers_starting_together_on_a_fresh_database_all_come_up(
    postgres_url: str, attempt: int
) -> None:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(4)
    workers = [context.Process(target=_start, args=(postgres_url, barrier)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [worker.exitcode for worker in workers] == [0, 0, 0, 0]
