"""The test suite's own database fixtures (tests/conftest.py) do what the other tests rely on."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from adapters.settings import Database
from devtools.postgres import database_of

ROOT = Path(__file__).resolve().parents[2]
CONFTEST = ROOT / "tests" / "conftest.py"

# Databases handed out by postgres_url so far in this session, in order.
_seen_databases: list[str] = []


def _existing_databases(admin_url: str) -> set[str]:
    with psycopg.connect(admin_url) as admin:
        return {row[0] for row in admin.execute("SELECT datname FROM pg_database")}


@dataclass
class DropWatch:
    names: list[str] = field(default_factory=list)
    open_connections: list[psycopg.Connection[Any]] = field(default_factory=list)


@pytest.fixture
def drop_watch(postgres_server: str) -> Iterator[DropWatch]:
    """Request this BEFORE postgres_url: its teardown then runs after postgres_url's
    and checks, from the admin connection, that the test's database is gone."""
    watch = DropWatch()
    yield watch
    try:
        still_there = _existing_databases(postgres_server) & set(watch.names)
        assert not still_there, f"postgres_url did not drop {sorted(still_there)}"
    finally:
        for conn in watch.open_connections:
            conn.close()


@pytest.mark.parametrize("round_", [1, 2, 3])
def test_postgres_url_is_a_fresh_empty_database_dropped_afterwards(
    drop_watch: DropWatch, postgres_url: str, postgres_server: str, round_: int
) -> None:
    name = database_of(postgres_url)
    assert name.startswith("daifuku_test_")
    assert name != database_of(postgres_server)
    assert name not in _seen_databases, "postgres_url handed out the same database twice"

    database = Database.from_url(postgres_url)
    server = Database.from_url(postgres_server)
    assert database.kind == "postgres"
    assert database.name == name
    assert (database.host, database.port, database.user) == (server.host, server.port, server.user)

    # Left open on purpose: the fixture must drop the database despite it.
    conn = psycopg.connect(postgres_url, autocommit=True)
    drop_watch.open_connections.append(conn)
    assert conn.execute("SELECT current_database()").fetchone() == (name,)
    tables = conn.execute(
        "SELECT table_schema, table_name FROM information_schema.tables "
        "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
    ).fetchall()
    assert tables == [], "a fresh test database must hold no tables"
    conn.execute("CREATE TABLE probe (id integer)")  # a reused database would show it next round

    drop_watch.names.append(name)
    _seen_databases.append(name)

    existing = _existing_databases(postgres_server)
    assert name in existing
    assert existing.isdisjoint(_seen_databases[:-1]), "an earlier test's database survived"


def test_postgres_server_lets_tests_create_databases(
    postgres_server: str, request: pytest.FixtureRequest
) -> None:
    assert request.node.get_closest_marker("postgres") is not None, "marker not auto-applied"
    with psycopg.connect(postgres_server) as admin:
        row = admin.execute(
            "SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
    assert row == (True,)


def test_sqlite_url_is_an_absolute_file_in_tmp_path(
    sqlite_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    assert sqlite_url.startswith("sqlite:////")
    database = Database.from_url(sqlite_url)
    assert database.kind == "sqlite"
    path = Path(database.path)
    assert path.is_absolute()
    assert path.parent == tmp_path.resolve()
    assert not path.exists()
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE probe (id INTEGER)")
        conn.commit()
    assert path.is_file()
    assert request.node.get_closest_marker("postgres") is None


def test_database_url_covers_both_stores(database_url: str, request: pytest.FixtureRequest) -> None:
    kind = request.node.callspec.params["database_url"]
    assert request.node.name.endswith(f"[{kind}]")
    database = Database.from_url(database_url)
    assert database.kind == kind
    marker = request.node.get_closest_marker("postgres")
    if kind == "postgres":
        assert marker is not None
        assert database.name.startswith("daifuku_test_")
        with psycopg.connect(database_url) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == (database.name,)
    else:
        assert marker is None
        assert Path(database.path).parent == request.getfixturevalue("tmp_path").resolve()


PROBE_TESTS = """
def test_needs_database(postgres_url):
    pass

def test_needs_server(postgres_server):
    pass

def test_both_stores(database_url):
    pass

def test_sqlite_only(sqlite_url):
    assert sqlite_url.startswith("sqlite:////")
"""


def _run_suite_without_postgres(tmp_path: Path, require: bool) -> subprocess.CompletedProcess[str]:
    """Run a small suite using this conftest, with no server and no binaries to be found."""
    (tmp_path / "conftest.py").write_text(CONFTEST.read_text())
    (tmp_path / "test_probe.py").write_text(PROBE_TESTS)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = dict(os.environ)
    env.pop("DAIFUKU_TEST_POSTGRES_URL", None)
    env.pop("PYTEST_ADDOPTS", None)
    env["DAIFUKU_TEST_POSTGRES_NO_LOCAL"] = "1"
    env["DAIFUKU_TEST_POSTGRES_NO_BINARIES"] = "1"
    env["DAIFUKU_REQUIRE_POSTGRES"] = "1" if require else "0"
    # The copied conftest imports devtools, which is not installed: it is found from the root.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_without_postgres_tests_are_skipped_with_a_loud_warning(tmp_path: Path) -> None:
    result = _run_suite_without_postgres(tmp_path, require=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "2 passed, 3 skipped" in output, output
    assert "WARNING: 3 PostgreSQL test(s) SKIPPED" in output, output
    assert "no server and no PostgreSQL binaries" in output, output


def test_required_postgres_turns_skips_into_failures(tmp_path: Path) -> None:
    result = _run_suite_without_postgres(tmp_path, require=True)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "2 passed, 3 errors" in output, output
    assert "DAIFUKU_REQUIRE_POSTGRES=1: PostgreSQL tests are mandatory" in output, output
    assert "PASSED test_probe.py::test_both_stores[sqlite]" in output, output
    assert "ERROR test_probe.py::test_both_stores[postgres]" in output, output
