"""Scenarios of features/referrals.feature."""

from pytest_bdd import scenarios

scenarios("referrals.feature")
