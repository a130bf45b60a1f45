"""Settings: the one place the environment is read, and the README's table of it."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from adapters.settings import ConfigurationError, Database, Settings
from api.bootstrap import bootstrap

README = Path(__file__).resolve().parents[2] / "README.md"
ROW = re.compile(r"^\|\s*`([A-Z0-9_]+)`\s*\|\s*(.*?)\s*\|")


def _readme_table() -> dict[str, str]:
    """The README's configuration table: variable -> its default cell."""
    section = README.read_text(encoding="utf-8").split("\n## Configuration\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")][2:]  # header, rule
    table = {}
    for row in rows:
        found = ROW.match(row)
        assert found, f"README configuration row not of the form | `NAME` | default | ...: {row}"
        table[found[1]] = found[2]
    assert len(table) == len(rows), "a variable is listed twice in the README's table"
    return table


class Recording(Mapping[str, str]):
    """An environment that remembers every name looked up in it."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self.values = dict(values)
        self.looked_up: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.looked_up.add(name)
        return self.values[name]

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("Settings looks variables up by name; it does not list them")

    def __len__(self) -> int:
        raise AssertionError("Settings looks variables up by name; it does not count them")


def test_the_readme_lists_exactly_the_variables_settings_reads() -> None:
    environ = Recording({})
    Settings.from_environ(environ)
    assert environ.looked_up == set(Settings.VARIABLES)
    assert len(Settings.VARIABLES) == len(set(Settings.VARIABLES))
    assert set(_readme_table()) == set(Settings.VARIABLES)


@pytest.mark.parametrize("name", Settings.VARIABLES)
def test_a_variable_set_to_its_documented_default_changes_nothing(name: str) -> None:
    default = _readme_table()[name]
    literal = re.fullmatch(r"`([^`]*)`", default)
    # A default in words ("generated once, ...") is what an unset or empty variable gives.
    value = literal[1] if literal else ""
    assert Settings.from_environ({name: value}) == Settings.from_environ({})


def test_the_defaults() -> None:
    settings = Settings.from_environ({})
    assert settings == Settings(
        database=Database(kind="sqlite", path="var/daifuku.db"),
        cache_size=2000,
        snapshot_interval=100,
        token_ttl_seconds=3600,
        read_models="views",
        read_wait_seconds=2.0,
        write_concurrency=1,
        secret_key=None,
        run_scheduler=False,
    )


def test_the_secret_key_is_read_and_never_shown() -> None:
    settings = Settings.from_environ({"DAIFUKU_SECRET_KEY": "s3cret"})
    assert settings.secret_key == "s3cret"
    assert "s3cret" not in repr(settings)
    assert Settings.from_environ({"DAIFUKU_SECRET_KEY": ""}).secret_key is None


@pytest.mark.parametrize(("raw", "on"), [("1", True), ("0", False), ("", False)])
def test_the_scheduler_switch(raw: str, on: bool) -> None:
    assert Settings.from_environ({"DAIFUKU_RUN_SCHEDULER": raw}).run_scheduler is on


@pytest.mark.parametrize(("raw", "on"), [("on", True), ("off", False), ("", True)])
def test_the_followup_process_switch(raw: str, on: bool) -> None:
    assert Settings.from_environ({"DAIFUKU_FOLLOWUPS": raw}).followups is on
    assert Settings.from_environ({}).followups is True


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("DAIFUKU_RUN_SCHEDULER", "true"),
        ("DAIFUKU_RUN_SCHEDULER", "2"),
        ("DAIFUKU_CACHE_SIZE", "0"),
        ("DAIFUKU_SNAPSHOT_INTERVAL", "ten"),
        ("DAIFUKU_TOKEN_TTL_SECONDS", "-1"),
        ("DAIFUKU_READ_MODELS", "cache"),
        ("DAIFUKU_FOLLOWUPS", "1"),
        ("DAIFUKU_FOLLOWUPS", "On"),
        ("DAIFUKU_READ_WAIT_SECONDS", "61"),
        ("DAIFUKU_READ_WAIT_SECONDS", "soon"),
        ("DAIFUKU_DATABASE_URL", "mysql://db/x"),
        ("DAIFUKU_DATABASE_URL", "postgresql://host/"),
    ],
)
def test_a_bad_value_names_its_variable(name: str, bad: str) -> None:
    with pytest.raises(ConfigurationError, match=name):
        Settings.from_environ({name: bad})


def test_without_a_mapping_the_process_environment_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DAIFUKU_SECRET_KEY", "from-the-process")
    monkeypatch.setenv("DAIFUKU_RUN_SCHEDULER", "1")
    settings = Settings.from_environ()
    assert settings.secret_key == "from-the-process"
    assert settings.run_scheduler is True


def test_bootstrap_signs_with_the_settings_secret_and_reads_no_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAIFUKU_SECRET_KEY", "from-the-process")
    url = f"sqlite:///{tmp_path}/a.db"
    ledger, keys, stored = bootstrap(Settings.from_environ({"DAIFUKU_DATABASE_URL": url}))
    try:
        assert stored == keys.signing_secret()
        assert stored != b"from-the-process"
    finally:
        ledger.close()
        keys.close()
    given = Settings.from_environ({"DAIFUKU_DATABASE_URL": url, "DAIFUKU_SECRET_KEY": "given"})
    ledger, keys, secret = bootstrap(given)
    try:
        assert secret == b"given"
    finally:
        ledger.close()
        keys.close()
