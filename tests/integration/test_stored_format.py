"""What the ledger writes to disk: compressed JSON, readable by anyone with zlib."""

from __future__ import annotations

import json
import zlib

from adapters.settings import Settings
from api.bootstrap import bootstrap
from tests.answers import answers


def test_events_are_stored_as_zlib_compressed_json(database_url: str) -> None:
    settings = Settings.from_environ({"DAIFUKU_DATABASE_URL": database_url})
    ledger, keys, _ = bootstrap(settings)
    try:
        answers(ledger).enrol("ann", "ann@example.com", None, "t")
        stored = ledger.recorder.select_notifications(start=1, limit=100)
        enrolled = [n for n in stored if n.topic.endswith("Member.Enrolled")]
        assert len(enrolled) == 1
        state = json.loads(zlib.decompress(enrolled[0].state))
        assert state["member_id"] == "ann" and "ann@example.com" not in json.dumps(state)
        assert ledger.sealer.open("ann", "email", state["sealed_email"]) == "ann@example.com"
    finally:
        ledger.close()
        keys.close()
