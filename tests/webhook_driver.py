"""The webhook dispatcher and deliverer driven step by step by a test, on the test's ledger.

Tests move the ledger's FixedClock to reach a retry; the deliverer's clock follows it, on top
of real time, because the receiver checks the signed timestamp against its own clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from standardwebhooks import Webhook

from adapters.webhook_dispatch import Deliverer, Dispatcher
from adapters.webhook_http import Sender
from adapters.webhooks import Webhooks
from domain.clock import FixedClock
from tests.receiver import Received, Receiver

STEPS = 400
STEP_SECONDS = 0.02


class DeliveryClock:
    """Real time, moved on as far as the test has moved the ledger's clock."""

    def __init__(self, ledger_clock: FixedClock) -> None:
        self.ledger_clock = ledger_clock
        self.origin = ledger_clock.now()

    def __call__(self) -> float:
        return time.time() + (self.ledger_clock.now() - self.origin).total_seconds()


@dataclass
class Driver:
    dispatcher: Dispatcher
    deliverer: Deliverer
    clock: DeliveryClock

    @classmethod
    def open(cls, webhooks: Webhooks, ledger_clock: FixedClock) -> Driver:
        clock = DeliveryClock(ledger_clock)
        sender = Sender(allow_private=webhooks.allow_private)
        return cls(
            Dispatcher(webhooks.ledger, webhooks.outbox, now=clock),
            Deliverer(webhooks.outbox, webhooks, sender, now=clock),
            clock,
        )

    def dispatch(self) -> None:
        """Turn everything recorded, and every replay asked for, into deliveries."""
        while self.dispatcher.catch_up():
            pass
        while self.dispatcher.replay_step():
            pass

    def run(self, receiver: Receiver | None = None, expect: int | None = None) -> None:
        """Dispatch, and deliver until nothing is in flight (and, with ``expect``, until the
        receiver holds that many requests)."""
        self.dispatch()

        def done() -> bool:
            enough = expect is None or receiver is None or len(receiver.received) >= expect
            return not self.deliverer.in_flight and enough

        self.deliver_until(done)

    def deliver_until(self, done: Callable[[], bool], steps: int = STEPS) -> None:
        """Start what is due and record what finished, until ``done()`` or ``steps`` steps."""
        for _ in range(steps):
            self.deliverer.step()
            if done():
                break
            self.deliverer.wait(STEP_SECONDS)
        self.deliverer.step()

    def close(self) -> None:
        self.deliverer.close()


def verified(secret: str, received: Received) -> dict[str, Any]:
    """The message ``received``, once its signature is verified with ``secret``."""
    found: dict[str, Any] = Webhook(secret).verify(received.body, received.headers)
    return found
