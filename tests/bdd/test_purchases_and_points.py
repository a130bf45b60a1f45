"""Scenarios of features/purchases_and_points.feature."""

from pytest_bdd import scenarios

scenarios("purchases_and_points.feature")
