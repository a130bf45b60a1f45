"""Throughput, latency and memory of Daifuku on PostgreSQL, through the production WSGI server.

``python -m bench.run`` (``make bench``) runs, in one go and against one fresh database:

1. a database ``daifuku_bench_<hex>`` on a PostgreSQL server on 127.0.0.1 (dropped at the end)
   and a storefront key made with ``daifuku keys create``;
2. the API under gunicorn on a free port of 127.0.0.1, waited for on ``/healthz``;
3. load: ``--members`` members enrolled, then ``--clients`` client processes posting purchases
   for random members for ``--duration`` seconds (after ``--warmup``), each on one keep-alive
   connection, while one more client reads member status at ``--status-rate`` per second;
   with ``--worker-lag`` (the default; ``--no-worker-lag`` skips it) a projection worker
   (``daifuku project --poll`` ``--worker-poll``) runs against the same database, started and
   caught up before the clients start, and every ``--lag-interval`` seconds the bench records
   the head of the log
   (the largest notification id in the events table) and the view's tracking position; a
   sample's lag is the time until the tracking position reached that head (so it is measured
   to within one interval, rounded up), and the p50/p99/max are over the samples of the
   measured window (all of them are in ``phases.load.worker_lag_series``); the worker is
   stopped (SIGTERM) once it has caught up after the load;
4. raw: ``--raw-writers`` processes doing one-row INSERT + COMMIT into a table shaped like the
   event store's for ``--raw-duration`` seconds; the ratio purchases/s / inserts/s; then
   (``--no-raw-locked`` skips it, and it has no target) the same with the event store's
   ``LOCK TABLE ... IN EXCLUSIVE MODE`` in each transaction, which makes commits, and their
   WAL flushes, one at a time: the ceiling of any writer that keeps the log's order that way;
5. import (``--no-import-phase`` skips it): a history from before Daifuku made by
   ``bench.history`` from a fixed seed (``--import-members`` members among ``--import-records``
   JSON Lines records: purchases with line items, refunds, redemptions, enrolments with referral
   codes, over four years) is read by ``daifuku import`` (``--import-batch``) as a subprocess
   into a database of its own (created and dropped like the bench's); its wall-clock time,
   start-up included, gives purchases/s (purchase records applied), records/s and events/s, and
   the report it writes the rejected count; the ratio is its purchases/s over the raw phase's
   inserts/s of the same run;
6. long history: one member with ``--long-events`` events; the median latency of a purchase for
   it against one for a new member (sequential, alternating);
7. memory (``--no-memory-phase`` skips it): ``--memory-purchases`` purchases across
   ``--memory-members`` new members at the best rate the load clients reach, then the peak
   resident memory of the gunicorn workers (VmHWM);
8. replay (``--no-replay-phase`` skips it): if the events table holds fewer than
   ``--replay-min-events`` events, ``--bulk-clients`` clients post purchases for the load
   phase's members until it does (after the memory figure is read, so it does not change it);
   then a raw scan of the events table with psycopg (a server-side cursor, pages of
   ``--raw-scan-page`` rows, every column, ``state`` included, in notification order),
   ``daifuku replay`` as a subprocess (its wall-clock time, start-up included: events/s), and
   the raw scan once more; the ratio is replay events/s over the faster raw scan's rows/s;
9. a table on stdout and ``bench/results.json`` with every figure, the configuration, the
   timestamps and pass or fail per target.

A module per phase (``load``, ``raw``, ``importing``, ``long_history``, ``memory``, ``replay``;
the worker's lag in ``worker_lag``, the imported history in ``history``), ``report`` for the
verdicts, the table and results.json, and ``run`` for the options and the order of the phases.

The server is found the way the test suite finds one: ``DAIFUKU_BENCH_DATABASE_URL`` (or
``--database-url``), else a server on 127.0.0.1:5432 as user ``postgres``, else a throwaway cluster
from the PostgreSQL binaries (``devtools/postgres.py``, which the suite uses too). Only loopback
addresses are ever used. Everything started is stopped on the way out, Ctrl-C included.

Environment variables such as ``POSTGRES_ENABLE_DB_FUNCTIONS=y`` reach the server unchanged
(they are recorded in the results), which is how variants of the event store's settings can be
compared.
"""
