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

Tests using PostgreSQL are marked ``postgres``. With ``DAIFUKU_REQUIRE_POSTGRES=1`` (CI)
a skipped ``postgres`` test is reported as a failure.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

ENV_URL = "DAIFUKU_TEST_POSTGRES_URL"
ENV_REQUIRE = "DAIFUKU_REQUIRE_POSTGRES"
ENV_NO_LOCAL = "DAIFUKU_TEST_POSTGRES_NO_LOCAL"
ENV_NO_BINARIES = "DAIFUKU_TEST_POSTGRES_NO_BINARIES"

LOCAL_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
TEST_DATABASE_PREFIX = "daifuku_test_"
PROBE_TIMEOUT_SECONDS = 2
START_TIMEOUT_SECONDS = 60

NO_POSTGRES_REASON = (
    "PostgreSQL tests SKIPPED: no server and no PostgreSQL binaries; install postgresql to run them"
)

_postgres_skips_key = pytest.StashKey[list[str]]()


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def postgres_required() -> bool:
    """Whether a skipped PostgreSQL test must fail the run (CI)."""
    return _env_flag(ENV_REQUIRE)


# --------------------------------------------------------------------------- URLs


def url_with_database(url: str, database: str) -> str:
    """``url`` pointing at another database on the same server."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


def database_of(url: str) -> str:
    return unquote(urlsplit(url).path.lstrip("/"))


def _server_answers(url: str, timeout: float = PROBE_TIMEOUT_SECONDS) -> str | None:
    """None if ``url`` is a server where we may create databases, else why not."""
    try:
        with psycopg.connect(url, connect_timeout=max(1, round(timeout))) as conn:
            row = conn.execute(
                "SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = current_user"
            ).fetchone()
    except psycopg.Error as error:
        return str(error).strip() or type(error).__name__
    if not row or not row[0]:
        return "the user may not create databases"
    return None


# ------------------------------------------------------------ throwaway cluster


def _version_key(bin_dir: Path) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", bin_dir.parent.name)) or (0,)


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_postgres_bin_dirs() -> list[Path]:
    """Directories holding initdb, pg_ctl and postgres: PATH first, then newest version."""
    if _env_flag(ENV_NO_BINARIES):
        return []
    candidates: list[Path] = []
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for pattern in (
        "/usr/lib/postgresql/*/bin",
        "/usr/pgsql-*/bin",
        "/opt/homebrew/opt/postgresql@*/bin",
    ):
        candidates.extend(sorted(map(Path, glob.glob(pattern)), key=_version_key, reverse=True))
    found: list[Path] = []
    for directory in candidates:
        if directory in found:
            continue
        if all(_is_executable(directory / exe) for exe in ("initdb", "pg_ctl", "postgres")):
            found.append(directory)
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ClusterUnavailable(Exception):
    """The throwaway cluster could not be started; the message says why."""


@dataclass
class ThrowawayCluster:
    """A PostgreSQL cluster in a temporary directory, owned by this test session."""

    bin_dir: Path
    base_dir: Path
    run_as: str | None  # user to run initdb/pg_ctl as; None: the current user
    port: int = 0

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "postgres.log"

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = START_TIMEOUT_SECONDS) -> None:
        command = _as_user(list(args), self.run_as)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", LANG="C")
        try:
            result = subprocess.run(
                command,
                cwd=self.base_dir,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise ClusterUnavailable(f"{shlex.join(command)}: {error}") from error
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip()[-2000:]
            raise ClusterUnavailable(
                f"{shlex.join(command)} exited with {result.returncode}: {output}"
            )

    def _log_tail(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def start(self) -> None:
        self._run(
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        last_error: ClusterUnavailable | None = None
        for _attempt in range(3):  # the free port may be taken between probe and bind
            self.port = _free_port()
            options = " ".join(
                [
                    "-F",  # no fsync: the data is thrown away anyway
                    f"-p {self.port}",
                    "-c listen_addresses=127.0.0.1",
                    f"-c unix_socket_directories={shlex.quote(str(self.base_dir))}",
                    "-c max_connections=200",
                ]
            )
            try:
                self._run(
                    str(self.bin_dir / "pg_ctl"),
                    "-D",
                    str(self.data_dir),
                    "-l",
                    str(self.log_file),
                    "-w",
                    "-t",
                    str(START_TIMEOUT_SECONDS),
                    "-o",
                    options,
                    "start",
                    timeout=START_TIMEOUT_SECONDS + 10,
                )
            except ClusterUnavailable as error:
                last_error = ClusterUnavailable(f"{error}\n{self._log_tail()}")
                continue
            if self._wait_until_ready():
                return
            last_error = ClusterUnavailable(
                f"server on port {self.port} never accepted connections\n{self._log_tail()}"
            )
            self.stop()
        assert last_error is not None
        raise last_error

    def _wait_until_ready(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if _server_answers(self.admin_url) is None:
                return True
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        if not (self.data_dir / "postmaster.pid").exists():
            return
        pg_ctl = str(self.bin_dir / "pg_ctl")
        for mode in ("fast", "immediate"):
            try:
                self._run(pg_ctl, "-D", str(self.data_dir), "-m", mode, "-w", "stop", timeout=30)
                return
            except ClusterUnavailable:
                continue

    def remove(self) -> None:
        shutil.rmtree(self.base_dir, ignore_errors=True)


def _run_as_postgres_user(base_dir: Path) -> str | None:
    """As root, initdb refuses to run: use the ``postgres`` account (None: run as ourselves)."""
    if os.geteuid() != 0:
        return None
    try:
        account = pwd.getpwnam("postgres")
    except KeyError:
        raise ClusterUnavailable(
            "running as root, initdb refuses to run as root, and there is no 'postgres' "
            "user to run it as"
        ) from None
    if not (shutil.which("runuser") or shutil.which("su")):
        raise ClusterUnavailable("running as root and neither runuser nor su is available")
    os.chown(base_dir, account.pw_uid, account.pw_gid)
    return account.pw_name


def _as_user(command: list[str], user: str | None) -> list[str]:
    if user is None:
        return command
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", user, "--", *command]
    return [shutil.which("su") or "su", "-s", "/bin/sh", "-c", shlex.join(command), user]


@contextmanager
def throwaway_cluster(bin_dir: Path) -> Iterator[ThrowawayCluster]:
    """Start a cluster from ``bin_dir``; stop it and remove its files on exit."""
    # Short path: the unix socket path (<dir>/.s.PGSQL.<port>) is limited to ~107 bytes.
    parent = tempfile.gettempdir()
    if len(parent) > 60 and Path("/tmp").is_dir():
        parent = "/tmp"
    base_dir = Path(tempfile.mkdtemp(prefix="daifuku-pg-", dir=parent))
    try:
        cluster = ThrowawayCluster(
            bin_dir=bin_dir, base_dir=base_dir, run_as=_run_as_postgres_user(base_dir)
        )
        try:
            cluster.start()
            yield cluster
        finally:
            cluster.stop()
    finally:
        shutil.rmtree(base_dir, ignore_errors=True)


# ---------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """Admin URL (database ``postgres``) of a server where tests may create databases."""
    configured = os.environ.get(ENV_URL, "").strip()
    if configured:
        if urlsplit(configured).scheme not in ("postgresql", "postgres"):
            pytest.fail(f"{ENV_URL}={configured!r} is not a postgresql:// URL", pytrace=False)
        problem = _server_answers(configured)
        if problem:
            pytest.fail(f"{ENV_URL}={configured!r} is not usable: {problem}", pytrace=False)
        yield configured
        return

    if not _env_flag(ENV_NO_LOCAL) and _server_answers(LOCAL_ADMIN_URL) is None:
        yield LOCAL_ADMIN_URL
        return

    bin_dirs = find_postgres_bin_dirs()
    if not bin_dirs:
        pytest.skip(NO_POSTGRES_REASON)
    try:
        with throwaway_cluster(bin_dirs[0]) as cluster:
            yield cluster.admin_url
    except ClusterUnavailable as error:
        pytest.skip(
            f"PostgreSQL tests SKIPPED: no server on 127.0.0.1:5432 and a throwaway cluster "
            f"from {bin_dirs[0]} could not be started: {error}"
        )


@contextmanager
def fresh_postgres_database(admin_url: str) -> Iterator[str]:
    """Create an empty uniquely named database; yield its URL; drop it on exit."""
    name = f"{TEST_DATABASE_PREFIX}{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(
                sql.Identifier(name)
            )
        )
    try:
        yield url_with_database(admin_url, name)
    finally:
        drop_postgres_database(admin_url, name)


def drop_postgres_database(admin_url: str, name: str) -> None:
    """Drop ``name`` even if connections to it were left open."""
    with psycopg.connect(admin_url, autocommit=True) as admin:
        if admin.info.server_version >= 130000:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
            return
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


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
