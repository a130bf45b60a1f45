"""Import records in: parsed with the single requests' schemas, planned, applied in batches.

Used by ``POST /v1/imports`` (one batch of up to 10,000 lines) and by ``daifuku import``
(a file of any length, directly into the store; with ``--url``, through that endpoint).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flask import Flask, Response, request
from marshmallow import Schema, ValidationError, fields, validate

from adapters.import_rejections import MemoryRejections, Rejections
from api.auth import allow
from api.blueprint import ApiBlueprint
from api.context import backend, caller, ledger
from api.problems import Problem, domain_problem, flatten, invalid_problem, problem_body
from api.schemas import IMPORT_KINDS, IMPORT_SCHEMAS, Identifier
from domain.actors import Actor
from domain.imports import APPLIED, PRESENT, REJECTED, Importer, Outcome, Record, plan
from domain.ledger import Ledger
from domain.members import Member, member_uuid

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

    @classmethod
    def of(cls, name: str, read: int, started: float, results: list[Result]) -> Report:
        """The report of a run begun at ``started`` (monotonic); sorts ``results`` by line."""
        results.sort(key=lambda r: r.line)
        report = cls(name, read, time.monotonic() - started)
        for result in results:
            report.add(result)
        return report

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


def sketch(line: int, text: str) -> Record | None:
    """What planning needs of a line (kind, ids, business time), read without the schemas'
    checks; None for a line planning cannot place (the full parse then says why)."""
    try:
        body = json.loads(text)
    except ValueError:
        return None
    if not isinstance(body, dict) or body.get("kind") not in SCHEMAS:
        return None
    kind = body["kind"]
    own_id, when = body.get(ID_FIELD[kind]), body.get(TIME_FIELD[kind])
    if not isinstance(own_id, str) or not isinstance(when, str):
        return None
    try:
        at = datetime.fromisoformat(when.upper().replace(" ", "T"))
    except ValueError:
        return None
    if at.tzinfo is None:
        return None
    data = {
        name: body[name]
        for name in ("member_id", "order_id", "referral_code")
        if isinstance(body.get(name), str)
    }
    if kind in ("purchase", "redemption") and "member_id" not in data:
        return None
    if kind == "refund" and "order_id" not in data:
        return None
    return Record(body.get("line", line) if isinstance(body.get("line"), int) else line,
                  kind, own_id, at, data)  # fmt: skip


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
    if read and not records and all(_not_an_object(r) for r in rejected):
        first = rejected[0].problem or {}
        raise NotJsonLines(
            f"no line is a JSON object (line {rejected[0].line}: {first.get('detail')}); "
            "an import is JSON Lines, one record a line"
        )
    return records, rejected, read


def _not_an_object(result: Result) -> bool:
    """A line refused before its kind was looked at: not JSON, or not an object."""
    return result.problem is not None and result.problem.get("status") == 400


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


def referrer_of(ledger: Ledger) -> Callable[[list[str]], dict[str, str]]:
    """The referrers of members enrolled before, by member: a referral is recorded with the
    enrolment (the referee's second event), so two small reads per member at most."""

    def referrers(member_ids: list[str]) -> dict[str, str]:
        uids = {member_uuid(member_id): member_id for member_id in member_ids}
        found: dict[str, str] = {}
        for uid in ledger.existing(list(uids)):
            for event in ledger.events.get(uid, lte=2):
                if isinstance(event, Member.ReferredBy):
                    found[uids[uid]] = event.referrer_id
        return found

    return referrers


def digest_of(lines: list[str]) -> str:
    """The input's digest: a run of the same input recalls what earlier runs refused."""
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def rejections_of(ledger: Ledger) -> Rejections:
    """The refusals kept beside an in-memory ledger (tests); a real store passes its table."""
    kept: Rejections | None = getattr(ledger, "_import_rejections", None)
    if kept is None:
        kept = MemoryRejections()
        ledger._import_rejections = kept  # type: ignore[attr-defined]
    return kept


def apply_records(
    ledger: Ledger,
    records: list[Record],
    name: str,
    digest: str,
    rejections: Rejections,
    actor: Actor | None = None,
    batch_size: int = 250,
) -> Iterator[list[Result]]:
    """Apply parsed records: the results of each batch once it is saved (the first: the
    records an earlier run of this input refused, and those no order can be found for)."""
    recalled = rejections.recalled(name, digest)
    fresh = [r for r in records if r.line not in recalled]
    first = [
        Result(r.line, REJECTED, r.kind, r.id, recalled[r.line])
        for r in records
        if r.line in recalled
    ]
    planned, unplaceable = plan(fresh, order_owner(ledger), referrer_of(ledger))
    first.extend(result_of(outcome) for outcome in unplaceable)
    _remember(rejections, name, digest, first)
    yield first
    for outcomes in Importer(ledger, name, batch_size, actor).run(planned):
        results = [result_of(outcome) for outcome in outcomes]
        _remember(rejections, name, digest, results)
        yield results


def _remember(rejections: Rejections, name: str, digest: str, results: list[Result]) -> None:
    refused = [(r.line, r.problem) for r in results if r.status == REJECTED and r.problem]
    if refused:
        rejections.remember(name, digest, refused)


def run(
    ledger: Ledger,
    lines: Iterable[str],
    name: str,
    actor: Actor | None = None,
    batch_size: int = 250,
    progress: Callable[[int, int], None] | None = None,
    rejections: Rejections | None = None,
    digest: str | None = None,
) -> tuple[Report, list[Result]]:
    """Import ``lines`` into ``ledger``: the report and one result per non-blank line, in
    line order. Records already in the ledger are counted as present, and the records an
    earlier run of the same input refused are refused again: running it again after an
    interruption applies what was not applied, and nothing else."""
    started = time.monotonic()
    lines = list(lines)
    records, results, read = parse_lines(lines)
    done = 0
    if progress is not None:
        progress(0, len(records))
    for found in apply_records(
        ledger,
        records,
        name,
        digest or digest_of(lines),
        rejections or rejections_of(ledger),
        actor,
        batch_size,
    ):
        results.extend(found)
        done += len(found)
        if progress is not None:
            progress(done, len(records))
    return Report.of(name, read, started, results), results


# The endpoint.


class ImportQuery(Schema):
    name = Identifier(
        load_default="api",
        metadata={"description": "the import's name, in each event's cause import:<name>:<line>"},
    )
    digest = fields.String(
        validate=validate.Regexp(r"^[0-9a-f]{64}$", error="must be 64 hex digits"),
        metadata={
            "description": "SHA-256 of the whole input this batch is part of (sent by `daifuku "
            "import --url`; default: of this body): the records an earlier batch of the same "
            "input refused are refused again"
        },
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
        _, results = run(
            ledger(),
            lines,
            query["name"],
            actor,
            query["batch"],
            rejections=backend().import_rejections,
            digest=query.get("digest"),
        )
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
