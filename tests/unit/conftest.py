"""Unit tests drive the Ledger's use cases on the in-memory event store, with a clock we move."""

from __future__ import annotations

import pytest

from adapters.vault import Vault
from domain.clock import FixedClock
from domain.ledger import Ledger

from .storefront import IN_MEMORY, START, Shop


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(START)


@pytest.fixture
def ledger(clock: FixedClock) -> Ledger:
    return Ledger(env=IN_MEMORY, clock=clock, sealer=Vault.in_memory())


@pytest.fixture
def shop(ledger: Ledger, clock: FixedClock) -> Shop:
    return Shop(ledger, clock)
