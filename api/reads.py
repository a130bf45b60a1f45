"""Reads answered from the read models, and from the ledger whenever a view cannot answer.

A member's row answers when it is current and holds at this instant: it has applied the
member's latest event (compared in one statement with the member's latest version in the log,
so a write acknowledged by any process is seen by the next read), and the stored status stays
true until its ``valid_until`` under the program version it was computed with. Otherwise the
ledger answers (it is always current). ``?after=`` still makes a read wait, a bounded time, for
the views to reach a position (the global reads use it). The header ``Daifuku-Read-From`` says
which one answered.
"""

from __future__ import annotations

import time
from typing import Any

from flask import g

from adapters.views import MemberStatusRow, MemberStatusView
from api import representations
from api.context import backend
from api.problems import invalid
from domain import analytics, value
from domain.members import member_uuid

READ_FROM_HEADER = "Daifuku-Read-From"
FIRST_POLL_SECONDS = 0.002
LONGEST_POLL_SECONDS = 0.05


def member_status(member_id: str, after: int | None) -> dict[str, Any]:
    found = backend()
    views = _views_at(after)
    if views is not None:
        row = current_row(views, member_id)
        now = found.clock.now()
        if row is not None and row.holds_at(now, found.ledger.terms().version):
            _served("view")
            return opened({**row.status, "as_of": now})
    _served("ledger")
    return opened(representations.status(found.ledger.member_status(member_id)))


def current_row(views: MemberStatusView, member_id: str) -> MemberStatusRow | None:
    """The member's row when it has applied every event of the member recorded so far, by
    any process (read in one statement with the member's latest version): every read of a
    member sees every acknowledged write to it."""
    recorder: Any = backend().ledger.recorder
    return views.current_row(member_id, member_uuid(member_id), recorder.events_table_name)


def opened(status: dict[str, Any]) -> dict[str, Any]:
    """A status with the member's personal data opened for this one answer."""
    return representations.opened(status, backend().ledger.sealer)


def referrals(member_id: str, after: int | None, start: int, limit: int) -> list[dict[str, Any]]:
    """``limit`` referrals from the ``start``-th (0-based), each with its ``seq``."""
    found = backend()
    views = _views_at(after)
    if views is not None:
        row = current_row(views, member_id)
        if row is not None and row.holds_at(found.clock.now(), found.ledger.terms().version):
            _served("view")
            return [dict(item) for item in row.referrals[start : start + limit]]
    _served("ledger")
    made = found.ledger.referrals(member_id, after=start, limit=limit)
    return representations.referrals(member_id, made, after=start)


def purchase(order_id: str, after: int | None) -> dict[str, Any]:
    found = backend()
    views = _views_at(after)
    if views is not None:
        # A purchase's view does not change with time, only with its member's events, and it is
        # written in one transaction with its member's row. So once the member's row is found
        # current, the purchase row read after it is at least as new: it answers.
        row = views.purchase(order_id)
        if row is not None and current_row(views, row.member_id) is not None:
            row = views.purchase(order_id)
            if row is not None:
                _served("view")
                return row.purchase
    _served("ledger")
    return representations.purchase(found.ledger.purchase(order_id))


def analytics_summary() -> dict[str, Any]:
    """The summary as of now from the totals the views keep (as of their position): one row
    per counter, whatever the number of members. ``refresh_pending`` counts the members whose
    figures time alone has changed and the worker has not yet recomputed (normally none)."""
    found = backend()
    views = found.views
    if views is None:
        _served("ledger")
        return {**found.ledger.analytics_summary(), "position": None, "refresh_pending": 0}
    now = found.clock.now()
    kept = views.summary_totals(found.ledger.name, now)
    if kept.position is None:  # never built, or being rebuilt: the ledger answers
        _served("ledger")
        return {**found.ledger.analytics_summary(), "position": None, "refresh_pending": 0}
    _served("view")
    return {
        **analytics.from_totals(kept.totals, now, found.ledger.terms().rules),
        "position": kept.position,
        "refresh_pending": kept.behind,
    }


def customer_value(value_class: str | None, start: int, limit: int) -> dict[str, Any]:
    """The customer-value page as of now, ranked by the database from the views (as of their
    position)."""
    found = backend()
    views = found.views
    now = found.clock.now()
    page = None
    if views is not None:
        page = views.value_page(found.ledger.name, value_class, start, limit, now)
    if page is None:  # no views, or none built yet
        _served("ledger")
        return found.ledger.customer_value(value_class=value_class, after=start, limit=limit)
    rules = found.ledger.terms().rules
    ranked = [
        value.ranked(
            value.MemberFacts.from_dict(entry.value), now, rules.point_value, page.buyers,
            entry.better,
        )
        for entry in page.entries
    ]  # fmt: skip
    stages = {entry.value["member_id"]: entry.stage for entry in page.entries}
    pareto = value.share(analytics.unscaled(page.top_fifth), analytics.unscaled(page.total))
    _served("view")
    return value.page(ranked, now, rules, stages.__getitem__, page.buyers, pareto)


def _views_at(after: int | None) -> MemberStatusView | None:
    """The views once they have applied position ``after``; None if there are none or they
    are not there within the wait."""
    found = backend()
    views = found.views
    if views is None or after is None:
        return views
    name = found.ledger.name
    if (views.max_tracking_id(name) or 0) >= after:
        return views
    head = found.ledger.recorder.max_notification_id() or 0
    if after > head:
        raise invalid("after", f"position {after} is not in the log yet (its head is {head})")
    deadline = time.monotonic() + found.read_wait_seconds
    pause = FIRST_POLL_SECONDS
    while time.monotonic() < deadline:
        time.sleep(pause)
        pause = min(pause * 2, LONGEST_POLL_SECONDS)
        if (views.max_tracking_id(name) or 0) >= after:
            return views
    return None


def _served(source: str) -> None:
    g.read_from = source
