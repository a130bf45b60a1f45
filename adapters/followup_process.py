"""The follow-up process: follows the ledger's log, starts the follow-ups its plans' triggers
call for, and keeps the read models of each plan version's effect.

The library's process pattern (``../shared/STYLE.md``): the log is read a page at a time from
the tracking position; the page's consequences and its position are written in one
transaction. The follow-ups it starts are member events, written to the ledger before that
transaction commits: a process killed between the two reads the page again and finds each
follow-up started already (a follow-up's id is its plan, its trigger's member version and its
member: the member refuses a second start), so each is recorded exactly once.

From the start on, a follow-up is the member's own (``domain/members/followups.py``): its steps
fall due with the scheduler, and a purchase stops it in the same command. What this process
decides is only who enters which plan (``domain/followup_triggers.py``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from eventsourcing.persistence import Notification
from eventsourcing.utils import get_topic

from adapters.background import BackgroundLoop
from adapters.followup_tables import (
    INSERT_FOLLOWUP,
    INSERT_GOAL_EVENT,
    OUTCOME,
    REACHED,
    STEP_RECORDED,
    STOPPED,
    FollowupTables,
    scaled,
)
from adapters.settings import Database
from domain import followup_triggers as triggers
from domain.actors import Actor, Cause
from domain.followup_triggers import Profile, ValueRanks
from domain.ledger import Ledger
from domain.members.followups import FollowupStart
from domain.plans import FollowupPlans, PlanVersion, version_of
from domain.program import PROGRAM_ID, Program, ProgramRules

log = logging.getLogger(__name__)
NAME = "followups"  # the process's tracking name
PAGE = 500
# Follow-ups started in one transaction: one commit for several, yet few members in each, so
# that another process's write to one of them (which makes them start one at a time) is rare.
START_BATCH = 10
POLL_SECONDS = 0.2
MEMBER_PREFIX = "domain.members:Member."
PUBLISHED = get_topic(FollowupPlans.Published)
FOLLOWUP_EVENTS = {
    "FollowupStarted",
    "FollowupStepDue",
    "FollowupStepWithheld",
    "FollowupOutcomeReported",
    "FollowupStopped",
}
WANTED = {
    MEMBER_PREFIX + name
    for name in triggers.PROFILE_EVENTS | set(triggers.TRIGGERS) | FOLLOWUP_EVENTS
} | {PUBLISHED}
PROCESS = Actor.system("followups")


class FollowupProcess:
    """Reads the log from its position, a page at a time, and writes what each page decides."""

    def __init__(self, ledger: Ledger, tables: FollowupTables, page: int = PAGE) -> None:
        self.ledger = ledger
        self.tables = tables
        self.page = page
        self.position = tables.max_tracking_id(NAME) or 0
        self.profiles: dict[str, Profile] = {p.member_id: p for p in tables.profiles()}
        self.plans: dict[str, PlanVersion] = tables.plans()
        self.ranks = ValueRanks()
        self._rules: dict[int, ProgramRules] = {}
        for profile in self.profiles.values():
            if profile.purchases:
                self.ranks.set(profile.member_id, profile.contribution(self._point_value(None)))
        self.started = 0  # follow-ups this process started (tests and metrics)
        self.more = False  # the last page was full: more of the log may be waiting

    def catch_up(self) -> int:
        """One page of the log; how many events it read (0: none new)."""
        notifications = self.ledger.recorder.select_notifications(
            start=self.position + 1, limit=self.page
        )
        # Judged before a full page loses its trailing command: that page is never "caught up".
        self.more = len(notifications) == self.page
        if not notifications:
            return 0
        if self.more:
            notifications = whole_commands(notifications)
        page = _Page()
        mapper = self.ledger.mapper
        group: list[Any] = []
        for notification in notifications:
            if notification.topic not in WANTED:
                continue
            event = mapper.to_domain_event(notification)
            if notification.topic == PUBLISHED:
                if group:  # the command before it is judged under the plans it was made under
                    self._decide(group, page)
                    group = []
                self._published(event, page)
                continue
            if group and not same_command(group[-1][1], event):
                self._decide(group, page)
                group = []
            group.append((self._apply(notification, event, page), event))
        if group:
            self._decide(group, page)
        starts = [(m, s, Cause(f"followup:{s.followup}", PROCESS)) for m, s in page.starts]
        for first in range(0, len(starts), START_BATCH):
            self.ledger.start_followups(starts[first : first + START_BATCH])
        last = notifications[-1].id
        if not self.tables.write(
            NAME,
            self.position,
            last,
            [self.profiles[m] for m in page.profiles],
            [self.plans[n] for n in page.plans],
            page.statements,
        ):
            raise RuntimeError("another follow-up process moved the position: starting again")
        self.started += len(page.starts)
        self.position = last
        return len(notifications)

    # Each event.

    def _published(self, event: Any, page: _Page) -> None:
        version = version_of(event.name, event.version, event.timestamp, event.plan)
        self.plans[event.name] = version
        page.plans.add(event.name)

    def _apply(self, notification: Notification, event: Any, page: _Page) -> int:
        """Apply the event; the number it is known by as a trigger."""
        name = notification.topic[len(MEMBER_PREFIX) :]
        member_id = event.member_id
        profile = self.profiles.get(member_id)
        if profile is None:
            profile = self.profiles[member_id] = Profile(member_id)
        number = profile.trigger_number(event.originator_version)
        if name in FOLLOWUP_EVENTS:
            page.statements.extend(view_statements(name, event))
            profile.followup_events += 1
            page.profiles.add(member_id)
            return number
        if name in triggers.PROFILE_EVENTS:
            triggers.apply(profile, name, event)
            page.profiles.add(member_id)
            if profile.purchases:
                point_value = self._point_value(getattr(event, "program_version", None))
                self.ranks.set(member_id, profile.contribution(point_value))
        if name == "PurchaseRecorded":
            page.statements.extend(
                goal_statements(member_id, notification.id, "purchase", event.at, event.amount)
            )
        elif name == "PointsRedeemed":
            page.statements.extend(
                goal_statements(member_id, notification.id, "redemption", event.at, None)
            )
        return number

    def _decide(self, group: list[tuple[int, Any]], page: _Page) -> None:
        """The follow-ups the triggers of one command start (judged after all its events)."""
        for number, event in group:
            name = type(event).__name__
            if name not in triggers.TRIGGERS or not triggers.starts_anything(event):
                continue
            member_id = event.member_id
            profile = self.profiles[member_id]
            purchases = purchases_at(group, event, profile)
            found = triggers.triggers_of(name, replace(profile, purchases=purchases))
            if not found:
                continue
            rules = self._rules_of(event.program_version)
            starts = triggers.decide(
                self.plans.values(),
                found,
                profile,
                self.ranks.value_class(member_id),
                number,
                event.at,
                rules,
                purchases,
            )
            page.starts.extend((member_id, start) for start in starts)

    def _rules_of(self, version: int | None) -> ProgramRules:
        if version is None:
            return self.ledger.terms().rules
        rules = self._rules.get(version)
        if rules is None:
            program: Program = self.ledger.repository.get(PROGRAM_ID, deepcopy_from_cache=False)
            rules = self._rules[version] = program.at_version(version).rules
        return rules

    def _point_value(self, version: int | None) -> Any:
        return self._rules_of(version).point_value


class _Page:
    def __init__(self) -> None:
        self.starts: list[tuple[str, FollowupStart]] = []
        self.profiles: set[str] = set()
        self.plans: set[str] = set()
        self.statements: list[tuple[str, Sequence[Any]]] = []


def same_command(one: Any, other: Any) -> bool:
    """Whether two successive events of the log were recorded by one command: the same member,
    cause and recording time."""
    return bool(
        one.originator_id == other.originator_id
        and one.cause == other.cause
        and one.timestamp == other.timestamp
    )


def whole_commands(notifications: Sequence[Notification]) -> Sequence[Notification]:
    """A full page without the events at its end that may belong to a command the next page
    goes on with (its last aggregate's trailing run), unless that is the whole page."""
    last = notifications[-1].originator_id
    cut = len(notifications)
    while cut > 0 and notifications[cut - 1].originator_id == last:
        cut -= 1
    return notifications if cut == 0 else notifications[:cut]


def purchases_at(group: list[tuple[int, Any]], event: Any, profile: Profile) -> int:
    """The member's purchases when ``event`` was recorded (``profile``: after the whole
    command): a purchase later in the command is not the first, and a trigger recorded before
    the command's purchase (a dormancy or a notice that fell due first) happened before it, so
    that purchase stops what the trigger starts."""
    purchases_after = sum(
        1
        for _, e in group
        if type(e).__name__ == "PurchaseRecorded"
        and e.originator_version > event.originator_version
    )
    return profile.purchases - purchases_after


def goal_statements(
    member_id: str, position: int, kind: str, at: datetime, amount: Any
) -> list[tuple[str, Sequence[Any]]]:
    moment = at.timestamp()
    revenue = scaled(amount) if amount is not None else 0
    return [
        (INSERT_GOAL_EVENT, (member_id, position, kind, moment, revenue)),
    ]


def view_statements(name: str, event: Any) -> list[tuple[str, Sequence[Any]]]:
    """The effect read models' share of a follow-up event."""
    if name == "FollowupStarted":
        goal = event.goal
        return [
            (
                INSERT_FOLLOWUP,
                (
                    event.followup,
                    event.member_id,
                    event.plan,
                    event.plan_version,
                    event.group,
                    event.trigger_at.timestamp(),
                    goal["event"],
                    goal["until"].timestamp(),
                    len(event.steps),
                ),
            ),
        ]
    if name in ("FollowupStepDue", "FollowupStepWithheld"):
        group = "treated" if name == "FollowupStepDue" else "holdout"
        return [
            (STEP_RECORDED, (event.plan, event.plan_version, event.step, group)),
            (REACHED, (event.step, event.step, event.followup)),
        ]
    if name == "FollowupOutcomeReported":
        sent = 1 if event.outcome == "sent" else 0
        return [(OUTCOME, (sent, 1 - sent, event.step, event.followup))]
    return [(STOPPED, (event.followup,))]


def open_followup_thread(ledger: Ledger, database: Database) -> FollowupThread:
    """The follow-up process of the database ``ledger`` is on (closed with the thread)."""
    return FollowupThread(ledger, FollowupTables.open(database), owns_tables=True)


class FollowupThread(BackgroundLoop):
    """The process in a daemon thread (``daifuku serve``'s background work); a failed pass is
    logged and started again from the recorded position."""

    thread_name = "daifuku-followups"

    def __init__(
        self,
        ledger: Ledger,
        tables: FollowupTables,
        poll_seconds: float = POLL_SECONDS,
        owns_tables: bool = False,
    ) -> None:
        self.ledger = ledger
        self.tables = tables
        self.owns_tables = owns_tables
        self.poll_seconds = poll_seconds
        self.process: FollowupProcess | None = None
        self.passed = threading.Event()
        super().__init__()

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    if self.process is None:
                        self.process = FollowupProcess(self.ledger, self.tables)
                    started = self.process.started
                    self.process.catch_up()
                except Exception:
                    log.exception("follow-up pass failed; starting again from the tables")
                    self.process = None
                    self._stopping.wait(1.0)
                    continue
                self.passed.set()
                # A pass that started something goes straight on: what it started is in the
                # log after its page, and the process is not caught up until it has read that.
                if not self.process.more and self.process.started == started:
                    self._stopping.wait(self.poll_seconds)
        finally:
            if self.owns_tables:
                self.tables.close()


def run_until_caught_up(process: FollowupProcess, most_seconds: float = 60.0) -> int:
    """Read until the log is read (tests, the CLI's one-off run); how many events."""
    read = 0
    deadline = time.monotonic() + most_seconds
    while time.monotonic() < deadline:
        found = process.catch_up()
        read += found
        if found == 0:
            return read
    return read
