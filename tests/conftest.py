"""Shared test infrastructure: where the ledger lives while the suite runs.

Fixtures
--------
``postgres_server`` (session)
    Admin URL of a usable PostgreSQL server, found in this order:

    1. ``DAIFUKU_TEST_POSTGRES_URL`` if set (an error if it does not answer);
    2. a server already answering on 127.0.0.1:5432 as user ``postgres``
       (not probed when ``DAIFUKU_TEST_POSTGRES_NO_LOCAL=1``);
    3. a throwaway cluster started from the PostgreSQL binaries (``initdb``/``pg_ctl``
       in PATH or ``/usr/lib/postgresql/*/bin``, newest first) in a temporary directory,
       stopped and removed at the end of the session (binaries hidden when
       ``DAIFUKU_TEST_POSTGRES_NO_BINARIES=1``);
    4. otherwise every PostgreSQL test is skipped, loudly.

``postgres_url`` (function)
    A fresh, empty database ``daifuku_test_<hex>`` on that server, dropped afterwards.

``sqlite_url`` (function)
    ``sqlite:////<tmp_path>/daifuku.db``.

``database_url`` (function)
    Parametrized over ``sqlite`` and ``postgres``.

Finding the server, the throwaway cluster and the databases are ``devtools/postgres.py``'s,
shared with the bench; this file turns what it raises into failures and skips.

Tests using PostgreSQL are marked ``postgres``. With ``DAIFUKU_REQUIRE_POSTGRES=1`` (CI)
a skipped ``postgres`` test is reported as a failure.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from devtools import postgres

ENV_URL = "DAIFUKU_TEST_POSTGRES_URL"
ENV_REQUIRE = "DAIFUKU_REQUIRE_POSTGRES"
ENV_NO_LOCAL = "DAIFUKU_TEST_POSTGRES_NO_LOCAL"
ENV_NO_BINARIES = "DAIFUKU_TEST_POSTGRES_NO_BINARIES"

TEST_DATABASE_PREFIX = "daifuku_test_"

NO_POSTGRES_REASON = (
    "PostgreSQL tests SKIPPED: no server and no PostgreSQL binaries; install postgresql to run them"
)

_postgres_skips_key = pytest.StashKey[list[str]]()


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def postgres_required() -> bool:
    """Whether a skipped PostgreSQL test must fail the run (CI)."""
    return _env_flag(ENV_REQUIRE)


# ---------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """Admin URL (database ``postgres``) of a server where tests may create databases."""
    configured = os.environ.get(ENV_URL, "").strip()
    if configured and urlsplit(configured).scheme not in ("postgresql", "postgres"):
        pytest.fail(f"{ENV_URL}={configured!r} is not a postgresql:// URL", pytrace=False)
    try:
        with postgres.admin_server(
            configured,
            probe_local=not _env_flag(ENV_NO_LOCAL),
            find_binaries=not _env_flag(ENV_NO_BINARIES),
        ) as (url, _how):
            yield url
    except postgres.ServerUnusable as problem:
        pytest.fail(f"{ENV_URL}={configured!r} is not usable: {problem}", pytrace=False)
    except postgres.NoServer as error:
        if error.bin_dir is None:
            pytest.skip(NO_POSTGRES_REASON)
        pytest.skip(
            f"PostgreSQL tests SKIPPED: no server on 127.0.0.1:5432 and a throwaway cluster "
            f"from {error.bin_dir} could not be started: {error}"
        )


def fresh_postgres_database(admin_url: str) -> AbstractContextManager[str]:
    """Create an empty uniquely named database; yield its URL; drop it on exit."""
    return postgres.fresh_database(admin_url, TEST_DATABASE_PREFIX)


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """URL of a fresh, empty PostgreSQL database, dropped after the test."""
    with fresh_postgres_database(postgres_server) as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """``sqlite:////abs/path/daifuku.db`` inside the test's tmp_path."""
    return f"sqlite:///{(tmp_path / 'daifuku.db').resolve()}"


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def database_url(request: pytest.FixtureRequest) -> str:
    """The test runs once against SQLite and once against PostgreSQL."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


# ------------------------------------------------------------------------- hooks


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "postgres: needs a PostgreSQL server "
        "(started by the suite when the binaries are installed)",
    )
    config.stash[_postgres_skips_key] = []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        fixturenames = getattr(item, "fixturenames", ())
        if ("postgres_url" in fixturenames or "postgres_server" in fixturenames) and (
            item.get_closest_marker("postgres") is None
        ):
            item.add_marker(pytest.mark.postgres)


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if (
        report.skipped
        and not hasattr(report, "wasxfail")
        and item.get_closest_marker("postgres") is not None
    ):
        reason = _skip_reason(report)
        item.config.stash[_postgres_skips_key].append(f"{item.nodeid}: {reason}")
        if postgres_required():
            report.outcome = "failed"
            report.longrepr = (
                f"{ENV_REQUIRE}=1: PostgreSQL tests are mandatory, but this one was skipped.\n"
                f"Skip reason: {reason}\n"
                f"Start a server on 127.0.0.1:5432, set {ENV_URL}, or install the PostgreSQL "
                f"binaries so the suite can start a throwaway cluster."
            )
    return report


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config
) -> None:
    skipped = config.stash.get(_postgres_skips_key, [])
    if not skipped:
        return
    reasons = sorted({entry.split(": ", 1)[-1] for entry in skipped})
    if postgres_required():
        title = f"{len(skipped)} PostgreSQL test(s) skipped -> FAILED ({ENV_REQUIRE}=1)"
    else:
        title = f"WARNING: {len(skipped)} PostgreSQL test(s) SKIPPED"
    terminalreporter.write_sep("!", title, red=True, bold=True)
    for reason in reasons:
        terminalreporter.write_line(f"  {reason}", red=True, bold=True)
    if not postgres_required():
        terminalreporter.write_line(
            f"  The PostgreSQL event store was NOT tested. Set {ENV_REQUIRE}=1 to make this "
            f"an error.",
            red=True,
            bold=True,
        )
    terminalreporter.write_sep("!", title, red=True, bold=True)
