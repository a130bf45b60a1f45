"""PostgreSQL for the test suite and the bench: a server to use, databases on it, URLs.

A server is the configured one, else one answering on 127.0.0.1:5432 as user ``postgres``, else a
throwaway cluster started from the PostgreSQL binaries (``initdb``/``pg_ctl`` in PATH or
``/usr/lib/postgresql/*/bin``, newest first) in a temporary directory, stopped and removed on exit.
Nothing here imports pytest: ``tests/conftest.py`` turns the errors into failures and skips,
``bench/database.py`` into the bench's own.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import psycopg
from psycopg import sql

LOCAL_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PROBE_TIMEOUT_SECONDS = 2
START_TIMEOUT_SECONDS = 60


def url_with_database(url: str, database: str) -> str:
    """``url`` pointing at another database on the same server."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


def database_of(url: str) -> str:
    return unquote(urlsplit(url).path.lstrip("/"))


def server_problem(url: str, timeout: float = PROBE_TIMEOUT_SECONDS) -> str | None:
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


def free_port() -> int:
    """A TCP port of 127.0.0.1 free now (another process may take it before it is bound)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _version_key(bin_dir: Path) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", bin_dir.parent.name)) or (0,)


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_postgres_bin_dirs() -> list[Path]:
    """Directories holding initdb, pg_ctl and postgres: PATH first, then newest version."""
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


class ClusterUnavailable(Exception):
    """The throwaway cluster could not be started; the message says why."""


@dataclass
class ThrowawayCluster:
    """A PostgreSQL cluster in a temporary directory, owned by the process that started it."""

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
            self.port = free_port()
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
            if server_problem(self.admin_url) is None:
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


class ServerUnusable(Exception):
    """The configured server does not answer, or its user may not create databases."""


class NoServer(Exception):
    """No server answers and no throwaway cluster runs; ``bin_dir`` is None when no PostgreSQL
    binaries were found, else the cluster from there did not start (the message says why)."""

    def __init__(self, message: str, bin_dir: Path | None = None) -> None:
        super().__init__(message)
        self.bin_dir = bin_dir


@contextmanager
def admin_server(
    configured: str = "",
    *,
    probe_local: bool = True,
    find_binaries: bool = True,
    on_cluster: Callable[[Path], None] | None = None,
) -> Iterator[tuple[str, str]]:
    """(admin URL, how it was found) of a server where databases may be created.

    ``configured`` if given (ServerUnusable if it is not usable), else the local server (unless
    not ``probe_local``), else a throwaway cluster (``on_cluster`` is told its binaries first),
    stopped when the block ends; NoServer if there is none of them.
    """
    if configured:
        problem = server_problem(configured)
        if problem:
            raise ServerUnusable(problem)
        yield configured, "configured"
        return
    if probe_local and server_problem(LOCAL_ADMIN_URL) is None:
        yield LOCAL_ADMIN_URL, "local server on 127.0.0.1:5432"
        return
    bin_dirs = find_postgres_bin_dirs() if find_binaries else []
    if not bin_dirs:
        raise NoServer("no PostgreSQL binaries (initdb, pg_ctl) were found")
    if on_cluster is not None:
        on_cluster(bin_dirs[0])
    try:
        with throwaway_cluster(bin_dirs[0]) as cluster:
            yield cluster.admin_url, f"throwaway cluster from {bin_dirs[0]} (fsync off)"
    except ClusterUnavailable as error:
        raise NoServer(str(error), bin_dirs[0]) from error


def create_database(admin_url: str, prefix: str) -> str:
    """Create an empty database ``<prefix><12 hex digits>`` on the server; its name."""
    name = f"{prefix}{secrets.token_hex(6)}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(
                sql.Identifier(name)
            )
        )
    return name


def drop_database(admin_url: str, name: str, connect_timeout: int | None = None) -> None:
    """Drop ``name`` even if connections to it were left open."""
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=connect_timeout) as admin:
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


@contextmanager
def fresh_database(admin_url: str, prefix: str) -> Iterator[str]:
    """The URL of a new empty database ``<prefix><hex>``, dropped on exit."""
    name = create_database(admin_url, prefix)
    try:
        # Thrown away afterwards: its commits need not wait for the disk. What a killed
        # process committed still stays (the server holds it); only a machine crash loses it.
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("ALTER DATABASE {} SET synchronous_commit = off").format(
                    sql.Identifier(name)
                )
            )
        yield url_with_database(admin_url, name)
    finally:
        drop_database(admin_url, name)
