"""The auditor's export: the whole ledger as JSON Lines with a verifiable hash chain."""

from __future__ import annotations

from collections.abc import Iterator

from flask import Response, stream_with_context

from adapters.export import export_lines
from api.auth import allow
from api.blueprint import ApiBlueprint
from api.context import backend

blp = ApiBlueprint(
    "audit",
    __name__,
    url_prefix="/v1/audit",
    description="Exports an outsider can verify: each line carries the previous line's SHA-256.",
)


@blp.route("/export")
@allow("auditor")
@blp.doc(
    responses={
        "200": {
            "description": "JSON Lines: one event per line (`kind: event`), then a summary line "
            "(`kind: summary`, `count`, `head_sha256`). Every line has `prev_sha256` (SHA-256 "
            "of the previous line's text; 64 zeros for the first) and `sha256` (SHA-256 of the "
            "line's canonical JSON without that field). Verify with `daifuku audit "
            "verify-export FILE`.",
            "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
        }
    }
)
def export() -> Response:
    """The whole ordered log, streamed, hash-chained"""
    found = backend()
    ledger = found.ledger
    lines = export_lines(
        lambda after, limit: ledger.event_log(after=after, limit=limit), found.clock.now()
    )

    def stream() -> Iterator[str]:
        for line in lines:
            yield line + "\n"

    return Response(
        stream_with_context(stream()),
        mimetype="application/x-ndjson",
        headers={"Content-Disposition": 'attachment; filename="daifuku-ledger.jsonl"'},
    )
