"""Scenarios of features/point_lots_and_expiry.feature."""

from pytest_bdd import scenarios

scenarios("point_lots_and_expiry.feature")
