"""Benchmarks of Daifuku on PostgreSQL: ``python -m bench.run`` (``make bench``)."""
