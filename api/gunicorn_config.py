"""gunicorn's hooks for ``/metrics`` to cover every worker: ``gunicorn -c python:api.gunicorn_config
-w 2 --threads 8 -k gthread api.wsgi:app``. gunicorn takes every name here that is one of its
settings, so this module holds the hooks alone (api/metrics.py says what each one does); other
settings stay on the command line.
"""

from api.metrics import child_exit, on_exit, on_starting

__all__ = ["child_exit", "on_exit", "on_starting"]
