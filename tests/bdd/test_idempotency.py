"""Scenarios of features/idempotency.feature."""

from pytest_bdd import scenarios

scenarios("idempotency.feature")
