"""Scenarios of features/roles.feature."""

from pytest_bdd import scenarios

scenarios("roles.feature")
