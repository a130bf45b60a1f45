"""Blueprints whose JSON bodies are read strictly: malformed or not an object is a 400."""

from __future__ import annotations

import json
from typing import Any

import flask
from flask_smorest import Blueprint
from marshmallow import missing
from webargs.flaskparser import FlaskParser

from api.problems import Problem


class BodyParser(FlaskParser):
    def _raw_load_json(self, req: flask.Request) -> Any:
        # The body is JSON whatever the Content-Type says; an empty body is an empty object.
        raw = req.get_data(cache=True)
        if not raw.strip():
            return missing
        try:
            body = json.loads(raw, parse_constant=_refuse_constant)
        except ValueError as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise Problem(400, f"the body is not valid JSON: {error}") from None
        if not isinstance(body, dict):
            raise Problem(400, "the body must be a JSON object")
        return body


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class ApiBlueprint(Blueprint):
    ARGUMENTS_PARSER = BodyParser()
