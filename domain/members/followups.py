"""A member's follow-ups: the plans it was entered in, each step as it fell due, the outcomes the
shop reported, and why a follow-up stopped.

A follow-up is started by the follow-up process (``adapters/followup_process.py``), which
follows the log and decides who is in a plan's audience; from then on it is the member's own
state: its steps fall due with time like any other time-driven change (``domain/members/due.py``:
recorded by the scheduler, or first by any later command), and the member's own purchase stops
it in the same command, so the outcome never depends on when the scheduler or the process last
ran. A holdout member's steps are recorded as withheld at the same instants: the two groups
differ only in what the shop was told.

The member also records when it went quiet (``BecameDormant``, the program's dormant days after
its last purchase), so that "became dormant" is a fact in the log that a plan can start on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from sys import intern
from typing import TYPE_CHECKING, Any

from domain.errors import Conflict, StepNotDue, UnknownFollowup, UnknownFollowupStep
from domain.members.events import MemberEvent

if TYPE_CHECKING:
    from domain.members.member import Member

ACTIVE = "active"
COMPLETED = "completed"
STOPPED = "stopped"
DUE = "due"  # a treated member's step: the shop was told
WITHHELD = "withheld"  # a holdout member's step: recorded, nothing sent
WAITING = "waiting"
OUTCOMES = ("sent", "failed")
SEPARATOR = "~"  # in neither a plan name nor a member id


def followup_id(plan: str, trigger_version: int, member_id: str) -> str:
    """A follow-up's id: its plan, the member's version that triggered it, and the member (so
    a report of an outcome finds its member without an index)."""
    return f"{plan}{SEPARATOR}{trigger_version}{SEPARATOR}{member_id}"


def member_of(followup: str) -> str | None:
    """The member a follow-up id names (None if it is not one)."""
    parts = followup.split(SEPARATOR, 2)
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2]:
        return None
    return parts[2]


@dataclass(slots=True)
class FollowupStep:
    n: int  # 1, 2, ...
    due_at: datetime
    channel: str
    message_key: str
    state: str = WAITING  # waiting, due or withheld
    recorded_at: datetime | None = None
    outcome: str | None = None
    detail: str | None = None
    reported_at: datetime | None = None


@dataclass(slots=True)
class Followup:
    id: str
    seq: int  # the n-th follow-up of the member: orders steps due at the same instant
    plan: str
    plan_version: int
    group: str
    trigger: str
    trigger_at: datetime
    started_at: datetime
    steps: list[FollowupStep]
    stop: str | None
    goal: dict[str, Any]  # {"event", "within_days", "until"}
    state: str = ACTIVE
    recorded: int = 0  # steps recorded so far
    ended_at: datetime | None = None
    reason: str | None = None  # why it stopped

    def next_step(self) -> FollowupStep | None:
        if self.state != ACTIVE or self.recorded >= len(self.steps):
            return None
        return self.steps[self.recorded]


class MemberFollowups:
    """Every follow-up of the member, in the order they started; the active ones by id."""

    def __init__(self) -> None:
        self.by_id: dict[str, Followup] = {}
        self.active: list[str] = []

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and vars(self) == vars(other)

    def __len__(self) -> int:
        return len(self.by_id)

    def next_due(self) -> tuple[datetime, int, str] | None:
        """The earliest step still to record: (due at, follow-up seq, follow-up id)."""
        best: tuple[datetime, int, str] | None = None
        for fid in self.active:
            followup = self.by_id[fid]
            step = followup.next_step()
            if step is None:
                continue
            found = (step.due_at, followup.seq, fid)
            if best is None or found < best:
                best = found
        return best

    def stoppable(self, stop: str) -> list[Followup]:
        return [self.by_id[fid] for fid in self.active if self.by_id[fid].stop == stop]

    def end(self, followup: Followup, state: str, at: datetime, reason: str | None) -> None:
        followup.state = state
        followup.ended_at = at
        followup.reason = reason
        self.active.remove(followup.id)


@dataclass(frozen=True)
class FollowupStart:
    """What the follow-up process decided: the plan version in force at the trigger, the group,
    the steps' due times (from the trigger's business time)."""

    followup: str
    plan: str
    plan_version: int
    group: str
    trigger: str
    trigger_at: datetime
    steps: tuple[tuple[int, str, str], ...]  # (delay days, channel, message key)
    stop: str | None
    goal_event: str
    goal_days: int
    purchases_at_trigger: int  # the member's purchases when the trigger happened


class FollowupStarted(MemberEvent):
    TOPIC = "domain.members:Member.FollowupStarted"
    followup: str
    plan: str
    plan_version: int
    group: str
    trigger: str
    trigger_at: datetime
    steps: list[dict[str, Any]]  # {"n", "due_at", "channel", "message_key"}
    stop: str | None
    goal: dict[str, Any]  # {"event", "within_days", "until"}

    def change(self, member: Member) -> None:
        book = member.followups
        # A member holds every follow-up it was in: the names they share are held once.
        book.by_id[self.followup] = Followup(
            id=self.followup,
            seq=len(book.by_id),
            plan=intern(self.plan),
            plan_version=self.plan_version,
            group=intern(self.group),
            trigger=intern(self.trigger),
            trigger_at=self.trigger_at,
            started_at=self.at,
            steps=[
                FollowupStep(s["n"], s["due_at"], intern(s["channel"]), intern(s["message_key"]))
                for s in self.steps
            ],
            stop=None if self.stop is None else intern(self.stop),
            goal={**self.goal, "event": intern(self.goal["event"])},
        )
        book.active.append(self.followup)


class _StepRecorded(MemberEvent):
    followup: str
    plan: str
    plan_version: int
    step: int
    due_at: datetime

    STATE = DUE

    def change(self, member: Member) -> None:
        book = member.followups
        followup = book.by_id[self.followup]
        step = followup.steps[self.step - 1]
        step.state = self.STATE
        step.recorded_at = self.at
        followup.recorded = self.step
        if followup.recorded == len(followup.steps):
            book.end(followup, COMPLETED, self.at, None)


class FollowupStepDue(_StepRecorded):
    """A treated member's step fell due: delivered to the shop (``followup.step_due``)."""

    TOPIC = "domain.members:Member.FollowupStepDue"
    channel: str
    message_key: str


class FollowupStepWithheld(_StepRecorded):
    """A holdout member's step fell due and was deliberately not sent."""

    TOPIC = "domain.members:Member.FollowupStepWithheld"
    STATE = WITHHELD


class FollowupOutcomeReported(MemberEvent):
    TOPIC = "domain.members:Member.FollowupOutcomeReported"
    followup: str
    step: int
    outcome: str
    detail: str | None

    def change(self, member: Member) -> None:
        step = member.followups.by_id[self.followup].steps[self.step - 1]
        step.outcome = self.outcome
        step.detail = self.detail
        step.reported_at = self.timestamp


class FollowupStopped(MemberEvent):
    TOPIC = "domain.members:Member.FollowupStopped"
    followup: str
    reason: str  # "purchased" (the plan's stop condition) or "erased" (the member's data)

    def change(self, member: Member) -> None:
        book = member.followups
        book.end(book.by_id[self.followup], STOPPED, self.at, self.reason)


class BecameDormant(MemberEvent):
    """No purchase for the program's dormant days: the stage the status shows is ``dormant``."""

    TOPIC = "domain.members:Member.BecameDormant"
    last_purchase_at: datetime

    def change(self, member: Member) -> None:
        member.dormant_noticed = self.last_purchase_at


def dormancy_due(member: Member, dormant_days: int) -> datetime | None:
    """When the member becomes dormant, unless that was recorded for its last purchase."""
    last = member.last_purchase_at
    if last is None or member.dormant_noticed == last:
        return None
    return last + timedelta(days=dormant_days)


def steps_of(start: FollowupStart) -> list[dict[str, Any]]:
    return [
        {
            "n": n,
            "due_at": start.trigger_at + timedelta(days=days),
            "channel": channel,
            "message_key": key,
        }
        for n, (days, channel, key) in enumerate(start.steps, 1)
    ]


def goal_of(start: FollowupStart) -> dict[str, Any]:
    return {
        "event": start.goal_event,
        "within_days": start.goal_days,
        "until": start.trigger_at + timedelta(days=start.goal_days),
    }


def check_outcome(member: Member, followup: str, n: int, outcome: str, detail: str | None) -> bool:
    """Whether reporting ``outcome`` of step ``n`` records anything (False: the same report
    again); raises if the follow-up or step is unknown, not due, or reported otherwise."""
    found = member.followups.by_id.get(followup)
    if found is None:
        raise UnknownFollowup(followup)
    if not 1 <= n <= len(found.steps):
        raise UnknownFollowupStep(followup, n)
    step = found.steps[n - 1]
    if step.state == WAITING:
        raise StepNotDue(
            f"step {n} of follow-up {followup!r} is not due until {step.due_at.isoformat()}"
            + (f" and never will be: the follow-up {found.state}" if found.state != ACTIVE else ""),
            "step",
        )
    if step.state == WITHHELD:
        raise StepNotDue(
            f"step {n} of follow-up {followup!r} was withheld (the member is in the holdout "
            "group): nothing was sent",
            "step",
        )
    if step.outcome is not None:
        if (step.outcome, step.detail) != (outcome, detail):
            raise Conflict(
                f"step {n} of follow-up {followup!r} was reported {step.outcome!r} already",
                "outcome",
            )
        return False
    return True
