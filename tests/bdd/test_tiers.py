"""Scenarios of features/tiers.feature."""

from pytest_bdd import scenarios

scenarios("tiers.feature")
