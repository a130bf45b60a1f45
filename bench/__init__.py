"""Throughput, latency, memory and the read side at scale of Daifuku on PostgreSQL, through the
production WSGI server, beside anchors measured in the same run (the ceiling of the stack, the
plain ``eventsourcing`` peer, PostgreSQL's raw rates), so that the targets are ratios that hold
on a noisy machine.

``python -m bench.run`` (``make bench``) runs, in one go, against fresh databases (the API's,
and one each for the peer, the import and the scale phase):

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
   stopped (SIGTERM) once it has caught up after the load. This server is ``gunicorn
   api.wsgi:app``, without ``daifuku serve``'s background work: no scheduler, webhook
   dispatcher or follow-up process runs beside this load. Then, each skippable, the same load
   with webhooks and without (``bench/webhooks.py``, ``--no-webhooks``), and on ``daifuku
   serve`` with its follow-up process and without (``bench/followups.py``, ``--no-followups``:
   ``DAIFUKU_FOLLOWUPS=on``/``off``, A-B-A-B-A; targets: purchases/s with it over without
   >= 0.9, within the noise, and its lag behind the log p99 <= 1 s);
4. ceiling (``--no-ceiling`` skips it): ``bench.ceiling_app`` (a trivial Flask JSON POST that
   parses the purchase body and answers a small JSON body, no database) under gunicorn with the
   API's ``--workers``, ``--threads``, ``--worker-class`` and ``--gunicorn-args``, driven by the
   load phase's clients (``--clients`` purchase clients, the status reader) with the same
   bodies and keys for the same ``--warmup`` and ``--duration``: its requests/s is the ceiling
   of the stack (target: purchases/s >= 0.3 x it); with ``--ceiling-schema`` (the default) once
   more through flask-smorest, webargs and marshmallow with Daifuku's ``PurchaseRequest``
   schema. CPU of the gunicorn workers over each run per POST answered (the status reads ride
   along, in the load phase too) against the API's per purchase gives the share of a
   purchase's CPU that gunicorn, werkzeug and Flask take (``flask_cpu_share``), and with the
   framework layers (``framework_cpu_share``): measured, not estimated;
5. peer (``--no-peer`` skips it): the ``eventsourcing`` library's own ``Application`` with one
   ``Aggregate`` and a one-event purchase command (``bench.peer``: ``repository.get``, the
   ``@event`` method, ``app.save``, a conflict retried), in a database of its own
   (``PERSISTENCE_MODULE=eventsourcing.postgres``), no HTTP: ``--members`` customers, then
   ``--clients`` writer threads for ``--warmup`` + ``--duration`` seconds, spread over
   ``--workers`` processes with one application each, as the library documents an application
   shared by a server's threads (target: purchases/s >= 1.0 x its purchases/s);
6. raw: ``--raw-writers`` processes doing one-row INSERT + COMMIT into a table shaped like the
   event store's for ``--raw-duration`` seconds; the ratio purchases/s / inserts/s; then
   (``--no-raw-locked`` skips it, and it has no target) the same with the event store's
   ``LOCK TABLE ... IN EXCLUSIVE MODE`` in each transaction, which makes commits, and their
   WAL flushes, one at a time: the ceiling of any writer that keeps the log's order that way;
7. import (``--no-import-phase`` skips it): a history from before Daifuku made by
   ``bench.history`` from a fixed seed (``--import-members`` members among ``--import-records``
   JSON Lines records: purchases with line items, refunds, redemptions, enrolments with referral
   codes, over four years) is read by ``daifuku import`` (``--import-batch``) as a subprocess
   into a database of its own (created and dropped like the bench's); its wall-clock time,
   start-up included, gives purchases/s (purchase records applied), records/s and events/s, and
   the report it writes the rejected count; the ratio is its purchases/s over the raw phase's
   inserts/s of the same run;
8. long history: one member with ``--long-events`` events; the median latency of a purchase for
   it against one for a new member (sequential, alternating);
9. memory (``--no-memory-phase`` skips it): ``--memory-purchases`` purchases across
   ``--memory-members`` new members at the best rate the load clients reach, then the peak
   resident memory of the gunicorn workers (VmHWM);
10. replay (``--no-replay-phase`` skips it): if the events table holds fewer than
   ``--replay-min-events`` events, ``--bulk-clients`` clients post purchases for the load
   phase's members until it does (after the memory figure is read, so it does not change it);
   then a raw scan of the events table with psycopg (a server-side cursor, pages of
   ``--raw-scan-page`` rows, every column, ``state`` included, in notification order),
   ``daifuku replay`` as a subprocess (its wall-clock time, start-up included: events/s), and
   the raw scan once more; the ratio is replay events/s over the faster raw scan's rows/s;
11. scale (``--no-scale-phase`` skips it): in a database of its own, for each of
   ``--scale-members`` (10,000 and 100,000) in turn, the missing members imported by ``daifuku
   import`` (a ``bench.history`` history of two records per member: most have purchases for the
   value page to rank), the read models caught up by ``daifuku project`` (the time recorded),
   then the API under the same gunicorn answers ``GET /v1/analytics/summary``,
   ``/v1/analytics/members?limit=100`` and ``?class=A&limit=100`` with an auditor key: one
   call untimed, then up to ``--scale-calls`` timed, fewer when slow (``--scale-budget``
   seconds per read, at least 3 calls; a call over ``--scale-timeout`` ends the read and counts
   as the timeout): p50 and p99. Targets, per read: p50 at the largest size <= 1.5 x p50 at the
   smallest, and < 100 ms;
12. a table on stdout and ``bench/results.json`` with every figure, the configuration, the
   timestamps and pass or fail per target; the ratios to the raw ceilings (``ratio``,
   ``ratio_to_locked``, ``import_ratio``, ``replay_ratio``) are information, with no target.

A module per phase (``load``, ``webhooks``, ``followups``, ``ceiling``, ``peer``, ``raw``,
``importing``, ``long_history``, ``memory``, ``replay``, ``scale``; the worker's lag in
``worker_lag``, the imported history in ``history``, the ceiling's WSGI app in
``ceiling_app``), ``report`` for the verdicts, the table and results.json, and ``run`` for the
options and the order of the phases.

The server is found the way the test suite finds one: ``DAIFUKU_BENCH_DATABASE_URL`` (or
``--database-url``), else a server on 127.0.0.1:5432 as user ``postgres``, else a throwaway cluster
from the PostgreSQL binaries (``devtools/postgres.py``, which the suite uses too). Only loopback
addresses are ever used. Everything started is stopped on the way out, Ctrl-C included.

Environment variables such as ``POSTGRES_ENABLE_DB_FUNCTIONS=y`` reach the server unchanged
(they are recorded in the results), which is how variants of the event store's settings can be
compared.
"""
