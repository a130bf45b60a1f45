"""The Flask application factory: blueprints, auth, problem errors, request ids, metrics."""

from __future__ import annotations

import http
import re
import time
import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Flask, Response, g, request
from flask.json.provider import DefaultJSONProvider
from flask_smorest import Api
from flask_smorest.utils import prepare_response
from swagger_ui_bundle import swagger_ui_path

from adapters.followup_tables import FollowupTables
from adapters.import_rejections import MemoryRejections, Rejections
from adapters.keys import KeyStore
from adapters.sidetables import SQLiteConnection
from adapters.verification_jobs import VerificationJobs
from adapters.views import MemberStatusView
from adapters.webhook_outbox import Outbox
from adapters.webhooks import Webhooks
from api import (
    analytics,
    audit,
    audit_verification,
    events,
    imports,
    logs,
    members,
    ops,
    personal_data,
    problems,
    program,
    purchases,
    redemptions,
    representations,
)
from api import followups as followup_views  # ``followups`` is create_app's FollowupTables
from api import keys as key_views  # ``keys`` is create_app's KeyStore
from api import webhooks as webhook_views  # ``webhooks`` is create_app's Webhooks
from api.admission import limit_writes
from api.auth import SECURITY_SCHEME, check_access
from api.context import EXTENSION, Backend
from api.metrics import Metrics
from api.problems import PROBLEM_MIMETYPE, invalid
from api.reads import READ_FROM_HEADER
from api.schemas import (
    ID_RE,
    PATH_IDS,
    FollowupIdConverter,
    IdConverter,
    KeyIdConverter,
    PlanNameConverter,
    ProblemSchema,
    followup_id_parameter,
    id_parameter,
    key_id_parameter,
    plan_name_parameter,
)

if TYPE_CHECKING:
    from domain.clock import Clock
    from domain.ledger import Ledger

MAX_BODY_BYTES = 1024 * 1024
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# /docs loads Swagger UI from the files the swagger-ui-bundle-v2 package installs, served here:
# the page works without the internet and runs no third party's script.
SWAGGER_UI = "/docs/assets/"
SWAGGER_UI_ASSETS = Blueprint(
    "api-docs-assets", __name__, static_folder=str(swagger_ui_path), static_url_path=SWAGGER_UI
)
DESCRIPTION = (
    "Event-sourced loyalty ledger. Money is a decimal string, times are RFC 3339 with an "
    "offset, errors are application/problem+json. Request bodies with unknown fields are "
    "refused (422). Creating requests carry their own id: a repeat with the same content "
    "answers 200 with the first response (its `position` is the log's head by then), with "
    "different content 409. A write's `position` passed as `?after=` to a read makes the "
    "read wait until the read models include that write."
)


class LedgerJSON(DefaultJSONProvider):
    """Times as RFC 3339 (Flask's default is an HTTP date), money as a string, order kept."""

    sort_keys = False

    @staticmethod
    def default(o: Any) -> Any:
        if isinstance(o, datetime | date):
            return o.isoformat()
        if isinstance(o, Decimal):
            return str(o)
        return DefaultJSONProvider.default(o)


class LedgerApi(Api):
    ERROR_SCHEMA = ProblemSchema

    def _register_error_handlers(self) -> None:
        problems.register(self._app)

    def _register_responses(self) -> None:
        # flask-smorest documents errors as application/json; ours are problem documents.
        for status in http.HTTPStatus:
            response: dict[str, Any] = {"description": status.phrase}
            if status >= 400:
                response["schema"] = self.ERROR_SCHEMA
            prepare_response(response, self.spec, PROBLEM_MIMETYPE)
            self.spec.components.response(status.name, response, lazy=True)
        default = {"description": "A problem document", "schema": self.ERROR_SCHEMA}
        prepare_response(default, self.spec, PROBLEM_MIMETYPE)
        self.spec.components.response(self.DEFAULT_ERROR_RESPONSE_NAME, default, lazy=True)


def create_app(
    ledger: Ledger,
    keys: KeyStore,
    *,
    token_secret: bytes,
    clock: Clock,
    token_ttl_seconds: int = 3600,
    views: MemberStatusView | None = None,
    read_wait_seconds: float = 2.0,
    write_concurrency: int | None = None,
    import_rejections: Rejections | None = None,
    verifications: VerificationJobs | None = None,
    webhooks: Webhooks | None = None,
    followups: FollowupTables | None = None,
) -> Flask:
    app = Flask("daifuku")
    app.json = LedgerJSON(app)
    app.config.update(
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,
        API_TITLE="Daifuku loyalty ledger",
        API_VERSION="1",
        OPENAPI_VERSION="3.1.0",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="docs",
        OPENAPI_SWAGGER_UI_URL=SWAGGER_UI,
        # No badge: Swagger UI would send the document to a public validator for it.
        OPENAPI_SWAGGER_UI_CONFIG={"validatorUrl": None},
        API_SPEC_OPTIONS={
            "info": {"description": DESCRIPTION},
            "components": {
                "securitySchemes": {
                    SECURITY_SCHEME: {
                        "type": "http",
                        "scheme": "bearer",
                        "description": "An API key (dfk_...) or a member token (dmt2....)",
                    }
                }
            },
        },
    )
    metrics = Metrics()
    if verifications is None:  # an app without a database of its own: its jobs live here
        verifications = VerificationJobs.in_memory(ledger, representations, clock)
    if webhooks is None:  # likewise its webhook outbox, and https endpoints only
        webhooks = Webhooks(ledger, Outbox(SQLiteConnection(":memory:")))
    if followups is None:  # and the follow-up process's read models (empty: none runs here)
        followups = FollowupTables(SQLiteConnection(":memory:"))
    app.extensions[EXTENSION] = Backend(
        ledger=ledger,
        keys=keys,
        token_secret=token_secret,
        clock=clock,
        token_ttl_seconds=token_ttl_seconds,
        metrics=metrics,
        verifications=verifications,
        views=views,
        read_wait_seconds=read_wait_seconds,
        import_rejections=import_rejections or MemoryRejections(),
        webhooks=webhooks,
        followups=followups,
    )
    app.url_map.converters["id"] = IdConverter
    app.url_map.converters["key_id"] = KeyIdConverter
    app.url_map.converters["followup_id"] = FollowupIdConverter
    app.url_map.converters["plan_name"] = PlanNameConverter
    api = LedgerApi(app)
    api.register_converter(IdConverter, id_parameter)
    api.register_converter(KeyIdConverter, key_id_parameter)
    api.register_converter(FollowupIdConverter, followup_id_parameter)
    api.register_converter(PlanNameConverter, plan_name_parameter)
    for blueprint in (
        members.blp,
        purchases.blp,
        redemptions.blp,
        imports.blp,
        personal_data.blp,
        program.blp,
        events.blp,
        analytics.blp,
        audit.blp,
        audit_verification.blp,
        key_views.blp,
        webhook_views.blp,
        followup_views.plans_blp,
        followup_views.blp,
        ops.blp,
    ):
        api.register_blueprint(blueprint)
    imports.allow_large_bodies(app)
    app.register_blueprint(SWAGGER_UI_ASSETS)

    @app.before_request
    def start() -> None:
        g.started = time.perf_counter()
        metrics.request_started()
        sent = request.headers.get("X-Request-Id", "")
        g.request_id = sent if REQUEST_ID_RE.match(sent) else uuid.uuid4().hex

    app.before_request(check_access)

    @app.before_request
    def check_path_ids() -> None:
        for name, value in (request.view_args or {}).items():
            if not name.endswith("_id"):
                continue
            pattern, message = PATH_IDS.get(
                name, (ID_RE, "must be 1-64 characters of A-Za-z0-9._:-")
            )
            if not pattern.match(str(value)):
                raise invalid(name, message)

    limit_writes(app, write_concurrency)

    @app.after_request
    def finish(response: Response) -> Response:
        response.headers["X-Request-Id"] = g.get("request_id", "")
        if "read_from" in g:
            response.headers[READ_FROM_HEADER] = g.read_from
        if request.path.startswith("/v1/"):
            response.headers.setdefault("Cache-Control", "no-store")
        if "started" in g:
            endpoint = request.url_rule.rule if request.url_rule else "unmatched"
            elapsed = time.perf_counter() - g.pop("started")
            metrics.request_finished(request.method, endpoint, response.status_code, elapsed)
        return response

    logs.install(app)  # after ``finish``, so that it runs before it
    return app
