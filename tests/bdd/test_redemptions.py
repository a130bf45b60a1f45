"""Scenarios of features/redemptions.feature."""

from pytest_bdd import scenarios

scenarios("redemptions.feature")
