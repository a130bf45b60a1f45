"""``gunicorn bench.ceiling_app:app``: the ceiling of the stack, a purchase POST that does nothing.

Two endpoints take the body of a purchase (``bench.clients.purchase_body``) with its bearer key,
as the load clients send it, and answer 201 with a small JSON body; no database, no domain:

- ``POST /v1/purchases``: plain Flask, ``request.get_json()`` and a dict back: what gunicorn,
  werkzeug and Flask cost per request (the ceiling the purchases/s target is a share of);
- ``POST /v1/schema/purchases``: the same through flask-smorest, webargs and marshmallow with
  Daifuku's own request schema (``api.schemas.PurchaseRequest``) and a response schema: what the
  API's framework layers cost before the ledger is reached.

``GET /v1/members/<id>`` answers the status reader of the load and ``GET /healthz`` the bench's
wait for the server.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from flask import Flask, request
from flask.views import MethodView
from flask_smorest import Api, Blueprint
from marshmallow import Schema, fields

from api.schemas import PurchaseRequest


class Recorded(Schema):
    order_id = fields.String()
    member_id = fields.String()
    amount = fields.String()
    points_awarded = fields.Integer()


def _unauthorised() -> tuple[dict[str, Any], int] | None:
    if not request.headers.get("Authorization", "").startswith("Bearer "):
        return {"title": "Unauthorized", "status": 401}, 401
    return None


def _recorded(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "order_id": body["order_id"],
        "member_id": body["member_id"],
        "amount": str(body["amount"]),
        "points_awarded": int(Decimal(body["amount"])),
    }


blp = Blueprint("ceiling", __name__, url_prefix="/v1/schema")


@blp.route("/purchases")
class SchemaPurchases(MethodView):
    @blp.arguments(PurchaseRequest())
    @blp.response(201, Recorded)
    def post(self, body: dict[str, Any]) -> Any:
        return _unauthorised() or _recorded(body)


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.update(
        API_TITLE="bench ceiling", API_VERSION="1", OPENAPI_VERSION="3.0.3", TESTING=False
    )
    Api(app).register_blueprint(blp)

    @app.post("/v1/purchases")
    def purchases() -> Any:
        refused = _unauthorised()
        if refused:
            return refused
        body: Any = request.get_json(silent=True)
        try:
            return _recorded(body), 201
        except (TypeError, KeyError, ValueError, InvalidOperation):
            return {"title": "Unprocessable Content", "status": 422}, 422

    @app.get("/v1/members/<member_id>")
    def member(member_id: str) -> Any:
        return _unauthorised() or {"member_id": member_id, "tier": "bronze", "points": 0}

    @app.get("/healthz")
    def healthz() -> Any:
        return {"status": "ok"}

    return app


app = create_app()
