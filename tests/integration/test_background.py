"""``daifuku serve``'s background work: which loops it runs follows the settings."""

from __future__ import annotations

import pytest

from api.background import BackgroundWork


@pytest.mark.parametrize(("setting", "runs"), [("on", True), ("off", False)])
def test_the_follow_up_process_runs_unless_turned_off(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, setting: str, runs: bool
) -> None:
    monkeypatch.setenv("DAIFUKU_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("DAIFUKU_FOLLOWUPS", setting)
    work = BackgroundWork()
    work.init()
    try:
        followups = work._followups
        assert (followups is not None and followups.alive()) is runs
        assert work._webhooks is not None and work._webhooks.alive()  # the rest runs either way
    finally:
        work.close()
