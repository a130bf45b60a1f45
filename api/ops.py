"""Liveness, database reachability and Prometheus metrics; no credentials needed."""

from __future__ import annotations

import logging
from typing import Any

from flask import Response, request
from prometheus_client.registry import Collector

from api.auth import public
from api.blueprint import ApiBlueprint
from api.context import backend
from api.metrics import (
    CONTENT_TYPE,
    OPENMETRICS_CONTENT_TYPE,
    FollowupFigures,
    LedgerFigures,
    WebhookFigures,
)
from api.problems import DATABASE_UNAVAILABLE, PROBLEM_MIMETYPE, problem_response
from api.schemas import Health, ProblemSchema

blp = ApiBlueprint("ops", __name__, description="For load balancers and monitoring.")
log = logging.getLogger(__name__)


@blp.route("/healthz")
@public
@blp.response(200, Health)
@blp.alt_response(
    503,
    schema=ProblemSchema,
    content_type=PROBLEM_MIMETYPE,
    description="The database does not answer",
)
def healthz() -> dict[str, Any] | Response:
    """Whether the process is up and the database answers, and how far behind the views are"""
    found = backend()
    try:
        found.keys.ping()
        health: dict[str, Any] = {"status": "ok", "database": "ok"}
        if found.views is not None:
            position = found.views.max_tracking_id(found.ledger.name) or 0
            head = found.ledger.recorder.max_notification_id() or 0
            health["read_models"] = {"position": position, "behind": max(head - position, 0)}
    except Exception as error:  # any failure to reach the database means "not ready"
        log.warning("health check: database unreachable: %s", error)
        return problem_response(DATABASE_UNAVAILABLE, "the database does not answer")
    return health


@blp.route("/metrics")
@public
@blp.doc(
    responses={
        "200": {
            "description": "Prometheus text format, or OpenMetrics when the Accept header asks "
            "for it",
            "content": {CONTENT_TYPE: {}, OPENMETRICS_CONTENT_TYPE: {}},
        }
    }
)
def metrics() -> Response:
    """Request counts, latency histograms and scheduler figures of every server process, and
    the ledger's: events appended, projection lag, analytics age, webhook deliveries"""
    found = backend()
    figures: list[Collector] = [LedgerFigures(found.ledger, found.views, found.clock)]
    if found.webhooks is not None:
        figures.append(WebhookFigures(found.ledger, found.webhooks.outbox))
    if found.followups is not None:
        figures.append(FollowupFigures(found.ledger, found.followups))
    body, content_type = found.metrics.render(*figures, accept=request.headers.get("Accept"))
    return Response(body, mimetype=None, content_type=content_type)
