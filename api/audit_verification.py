"""The auditor asks the system to prove its read models are exactly what the history says.

A verification replays the whole history, which takes minutes on a large ledger: it runs as a
job (adapters/verification_jobs.py) in the background of the process that got the request, and
any worker process answers for it from the table the job keeps its state in.
"""

from __future__ import annotations

import re
from typing import Any

from flask import url_for
from marshmallow import Schema, fields, validate

from adapters.verification_jobs import STATUSES, Job
from api.auth import allow
from api.blueprint import ApiBlueprint
from api.context import backend
from api.problems import UNKNOWN_VERIFICATION, Problem
from api.schemas import position_field

# A verification's id is the server's: a UUID as POST returned it.
VERIFICATION_ID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
VERIFICATION_ID_RE = re.compile(VERIFICATION_ID)

blp = ApiBlueprint(
    "audit_verification",
    __name__,
    url_prefix="/v1/audit/verifications",
    description="Replays the whole history into fresh views and compares them with the live ones, "
    "as a job that runs in the background.",
)


class MismatchSchema(Schema):
    member_id = fields.String()
    field = fields.String(metadata={"description": "dotted status field, `version` or `row`"})
    live = fields.Raw(allow_none=True)
    replayed = fields.Raw(allow_none=True)


class ProgressSchema(Schema):
    events_done = fields.Integer(metadata={"description": "events replayed so far"})
    events_total = fields.Integer(
        allow_none=True,
        metadata={"description": "events to replay in all; null until the replay has begun"},
    )
    rate_per_second = fields.Float(metadata={"description": "events replayed per second"})
    started_at = fields.DateTime()
    finished_at = fields.DateTime(
        allow_none=True,
        metadata={"description": "when it ended; for an interrupted job, its last heartbeat"},
    )


class VerificationSchema(Schema):
    id = fields.String(metadata={"pattern": VERIFICATION_ID})
    status = fields.String(
        validate=validate.OneOf(STATUSES),
        metadata={
            "description": "`running`; then `done`, `failed`, or `interrupted` when the process "
            "running it stopped (a new POST then starts another)"
        },
    )
    progress = fields.Nested(ProgressSchema)
    error = fields.String(metadata={"description": "why it failed or was interrupted"})
    events = fields.Integer(metadata={"description": "once done: events replayed"})
    members = fields.Integer(metadata={"description": "once done: members in the replayed view"})
    position = position_field(
        "once done: the live view's position; null if it was never built", allow_none=True
    )
    live_view = fields.String(metadata={"description": "once done: `built` or why not"})
    mismatches = fields.List(
        fields.Nested(MismatchSchema), metadata={"description": "once done: every difference"}
    )


@blp.route("", methods=["POST"])
@allow("auditor")
@blp.response(
    202,
    VerificationSchema,
    description="Started, or the one already running (the same id); `Location` is its URL",
    headers={"Location": {"description": "the job's URL", "schema": {"type": "string"}}},
)
@blp.doc(responses={"503": "SERVICE_UNAVAILABLE"})
def verify() -> tuple[dict[str, Any], int, dict[str, str]]:
    """Start replaying the history up to the live view's position and comparing, member by
    member; while one runs, answer that one"""
    try:
        job, _ = backend().verifications.start()
    except ValueError as error:
        raise Problem(503, f"the read models cannot be verified here: {error}") from None
    location = url_for("audit_verification.verification", verification=job.id)
    return represent(job), 202, {"Location": location}


@blp.route(
    "/<verification>",
    methods=["GET"],
    parameters=[
        {
            "in": "path",
            "name": "verification",
            "required": True,
            "schema": {"type": "string", "pattern": VERIFICATION_ID},
            "description": "the id POST answered; any other id is a 404",
        }
    ],
)
@allow("auditor")
@blp.response(200, VerificationSchema)
@blp.doc(responses={"404": "NOT_FOUND"})
def verification(verification: str) -> dict[str, Any]:
    """A verification's status and progress; once done, what it found"""
    if not VERIFICATION_ID_RE.match(verification):
        raise Problem(
            UNKNOWN_VERIFICATION,
            f"no verification has the id {verification[:80]!r}: ids are lowercase UUIDs "
            "as POST /v1/audit/verifications returned them",
        )
    job = backend().verifications.find(verification)
    if job is None:
        raise Problem(UNKNOWN_VERIFICATION, f"no verification has the id {verification!r}")
    return represent(job)


def represent(job: Job) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": job.id,
        "status": job.status,
        "progress": {
            "events_done": job.events_done,
            "events_total": job.events_total,
            "rate_per_second": round(job.rate, 1),
            "started_at": job.started_at,
            "finished_at": job.finished_at,
        },
    }
    if job.error is not None:
        body["error"] = job.error
    if job.result is not None:
        body.update(job.result)
    return body
