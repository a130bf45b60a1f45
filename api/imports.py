"""Import records in: parsed with the single requests' schemas, planned, applied in batches.

Used by ``POST /v1/imports`` (one batch of up to 10,000 lines) and by ``daifuku import``
(a file of any length, directly into the store; with ``--url``, through that endpoint).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flask import Flask, Response, request
from marshmallow import Schema, ValidationError, fields, validate

from api.auth import allow
from api.blueprint import ApiBlueprint
from api.context import caller, ledger
from api.problems import Problem, domain_problem, flatten, invalid_problem, problem_body
from api.schemas import IMPORT_KINDS, IMPORT_SCHEMAS, Identifier
from domain.actors import Actor
from domain.imports import APPLIED, PRESENT, REJECTED, Importer, Outcome, Record, plan
from domain.ledger import Ledger

MAX_LINES = 10_000
MAX_BODY_BYTES = 32 * 1024 * 1024
MIMETYPE = "application/x-ndjson"
ID_FIELD = {
    "member": "member_id",
    "purchase": "order_id",
    "refund": "refund_id",
    "redemption": "redemption_id",
}
TIME_FIELD = {
    "member": "enrolled_at",
    "purchase": "occurred_at",
    "refund": "occurred_at",
    "redemption": "occurred_at",
}
SCHEMAS: dict[str, Schema] = {kind: schema() for kind, schema in IMPORT_SCHEMAS.items()}


class NotJsonLines(Exception):
    """Not one line of the input is a JSON object: it is not an import at all."""


@dataclass(frozen=True)
class Result:
    """What became of one line: applied, present (recorded before) or rejected, and why."""

    line: int
    status: str
    kind: str | None = None
    id: str | None = None
    problem: dict[str, Any] | None = None
    text: str | None = field(default=None, compare=False)  # a rejected line as it was

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"line": self.line, "status": self.status, "id": self.id}
        if self.kind is not None:
            body["kind"] = self.kind
        if self.problem is not None:
            body["problem"] = self.problem
        return body


@dataclass
class Report:
    name: str
    read: int = 0
    seconds: float = 0.0
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)  # (kind, status)

    def add(self, result: Result) -> None:
        self.counts[(result.kind or "unknown", result.status)] += 1

    def total(self, status: str) -> int:
        return sum(n for (_, found), n in self.counts.items() if found == status)

    def to_dict(self) -> dict[str, Any]:
        kinds = sorted({kind for kind, _ in self.counts})
        return {
            "name": self.name,
            "read": self.read,
            "applied": self.total(APPLIED),
            "present": self.total(PRESENT),
            "rejected": self.total(REJECTED),
            "seconds": round(self.seconds, 3),
            "by_kind": {
                kind: {s: self.counts[(kind, s)] for s in (APPLIED, PRESENT, REJECTED)}
                for kind in kinds
            },
        }


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse(line: int, text: str) -> Record | Result:
    """One line as a record, or why it is rejected (the problem a single request would get)."""
    try:
        body = json.loads(text, parse_constant=_refuse_constant)
    except ValueError as error:
        return Result(line, REJECTED, problem=problem_body(400, f"not valid JSON: {error}"))
    if not isinstance(body, dict):
        return Result(line, REJECTED, problem=problem_body(400, "must be a JSON object"))
    kind = body.get("kind")
    if kind not in SCHEMAS:
        errors = {"kind": [f"must be one of: {', '.join(IMPORT_KINDS)}"]}
        return Result(line, REJECTED, problem=invalid_problem(errors))
    given_id = body.get(ID_FIELD[kind])
    shown_id = given_id if isinstance(given_id, str) else None
    try:
        data: dict[str, Any] = SCHEMAS[kind].load(body)
    except ValidationError as error:
        problem = invalid_problem(flatten(error.messages))
        return Result(line, REJECTED, kind, shown_id, problem)
    at: datetime = data[TIME_FIELD[kind]]
    return Record(data.pop("line", line), kind, data[ID_FIELD[kind]], at, data)


def parse_lines(lines: Iterable[str]) -> tuple[list[Record], list[Result], int]:
    """Every non-blank line parsed: the records, the rejected lines, the lines read. A text
    in which no line is a JSON object is not an import (NotJsonLines)."""
    records: list[Record] = []
    rejected: list[Result] = []
    read = 0
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        read += 1
        found = parse(number, text)
        if isinstance(found, Record):
            records.append(found)
        else:
            rejected.append(Result(**{**found.__dict__, "text": text.rstrip("\n")}))
    if read and not records and all(r.kind is None for r in rejected):
        first = rejected[0].problem or {}
        raise NotJsonLines(
            f"no line is a JSON object (line {rejected[0].line}: {first.get('detail')}); "
            "an import is JSON Lines, one record a line"
        )
    return records, rejected, read


def result_of(outcome: Outcome) -> Result:
    problem = None if outcome.error is None else domain_problem(outcome.error)
    return Result(outcome.line, outcome.status, outcome.kind, outcome.id, problem)


def order_owner(ledger: Ledger) -> Callable[[str], str | None]:
    def owner(order_id: str) -> str | None:
        try:
            return ledger.writes.owner("order", order_id, LookupError())
        except LookupError:
            return None

    return owner


def run(
    ledger: Ledger,
    lines: Iterable[str],
    name: str,
    actor: Actor | None = None,
    batch_size: int = 250,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Report, list[Result]]:
    """Import ``lines`` into ``ledger``: the report and one result per non-blank line, in
    line order. Records already in the ledger are counted as present; running it again after
    an interruption applies what was not applied."""
    started = time.monotonic()
    records, results, read = parse_lines(lines)
    planned, unplaceable = plan(records, order_owner(ledger))
    results.extend(result_of(outcome) for outcome in unplaceable)
    importer = Importer(ledger, name, batch_size, actor)
    done = 0
    if progress is not None:
        progress(0, len(planned))
    for outcomes in importer.run(planned):
        results.extend(result_of(outcome) for outcome in outcomes)
        done += len(outcomes)
        if progress is not None:
            progress(done, len(planned))
    results.sort(key=lambda r: r.line)
    report = Report(name, read, time.monotonic() - started)
    for result in results:
        report.add(result)
    return report, results


# The endpoint.


class ImportQuery(Schema):
    name = Identifier(
        load_default="api",
        metadata={"description": "the import's name, in each event's cause import:<name>:<line>"},
    )
    batch = fields.Integer(
        load_default=250,
        validate=validate.Range(min=1, max=MAX_LINES),
        metadata={"description": "records per transaction"},
    )


blp = ApiBlueprint(
    "imports",
    __name__,
    url_prefix="/v1/imports",
    description="Histories from before Daifuku, applied as if Daifuku had been running all along.",
)


@blp.route("", methods=["POST"])
@allow("storefront")
@blp.arguments(ImportQuery(), location="query")
@blp.doc(
    requestBody={
        "required": True,
        "description": f"JSON Lines, up to {MAX_LINES:,} lines: one import record a line "
        "(`kind` member, purchase, refund or redemption, and the fields of the single "
        "request; `enrolled_at` or `occurred_at` required).",
        "content": {MIMETYPE: {"schema": {"type": "string"}}},
    },
    responses={
        "200": {
            "description": "JSON Lines, one per non-blank line of the body in order: "
            '`{"line", "status": "applied"|"present"|"rejected", "id", "kind", "problem"?}`',
            "content": {MIMETYPE: {"schema": {"type": "string"}}},
        },
        "413": "REQUEST_ENTITY_TOO_LARGE",
    },
)
def import_records(query: dict[str, Any]) -> Response:
    """Import a batch of records: each applied, found present, or rejected with its problem"""
    raw = request.get_data(cache=True)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Problem(400, "the body is not UTF-8 text") from None
    lines = text.splitlines()
    if len(lines) > MAX_LINES:
        raise Problem(
            413, f"a batch holds at most {MAX_LINES:,} lines; this one has {len(lines):,}"
        )
    if not any(line.strip() for line in lines):
        raise Problem(400, "the body holds no import records")
    who = caller()
    actor = Actor.importer(query["name"], key_id=who.key_id)
    try:
        _, results = run(ledger(), lines, query["name"], actor, query["batch"])
    except NotJsonLines as error:
        raise Problem(400, str(error)) from None
    body = "".join(json.dumps(r.to_dict(), separators=(",", ":")) + "\n" for r in results)
    return Response(body, mimetype=MIMETYPE)


def allow_large_bodies(app: Flask) -> None:
    """An import batch may be larger than any other request body."""

    @app.before_request
    def raise_limit() -> None:
        if request.endpoint == "imports.import_records":
            request.max_content_length = MAX_BODY_BYTES
