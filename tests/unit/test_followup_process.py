"""The follow-up process: who enters which plan, decided from the log alone."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from eventsourcing.persistence import IntegrityError, Tracking
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.followup_process import NAME, FollowupProcess, FollowupThread, run_until_caught_up
from adapters.followup_tables import FollowupTables
from adapters.sidetables import SQLiteConnection
from adapters.vault import Vault
from api.followup_effect import answer
from domain.actors import Actor, Cause
from domain.clock import FixedClock
from domain.ledger import Ledger
from domain.members import Member, member_uuid
from domain.members.followups import followup_id
from domain.plans import DEFAULT_PLANS, Plan, group_of
from tests.answers import answers

from .storefront import IN_MEMORY, START, Shop, day


@pytest.fixture
def tables() -> FollowupTables:
    return FollowupTables(SQLiteConnection(":memory:"))


@pytest.fixture
def process(ledger: Ledger, tables: FollowupTables) -> FollowupProcess:
    return FollowupProcess(ledger, tables)


def followups(shop: Shop, member_id: str = "m1") -> list[Any]:
    return list(shop.ledger.member_copy(member_id).followups.by_id.values())


def test_a_first_purchase_starts_thank_you_with_steps_on_days_0_3_7(
    shop: Shop, process: FollowupProcess
) -> None:
    shop.enrol("m1")
    shop.at(0.001).buy("o-1", "100.00")
    run_until_caught_up(process)
    plans = sorted(f.plan for f in followups(shop))
    assert plans == ["a-class", "prospect", "thank-you"]  # the only buyer is class A
    thanks = next(f for f in followups(shop) if f.plan == "thank-you")
    assert [s.due_at for s in thanks.steps] == [day(0.001), day(3.001), day(7.001)]
    assert thanks.steps[0].state in ("due", "withheld")
    assert thanks.id == followup_id("thank-you", 2, "m1")
    shop.at(3.001)
    shop.ledger.record_due()
    thanks = next(f for f in followups(shop) if f.plan == "thank-you")
    assert [s.state != "waiting" for s in thanks.steps] == [True, True, False]


def group_members(plan: str, group: str, count: int, holdout: int = 10) -> list[str]:
    """Member ids the stable hash puts in ``group`` of ``plan``."""
    found = []
    n = 0
    while len(found) < count:
        member_id = f"c{n}"
        if group_of(member_id, plan, holdout) == group:
            found.append(member_id)
        n += 1
    return found


def only(shop: Shop, plan: str, member_id: str = "m1") -> Any:
    (found,) = [f for f in followups(shop, member_id) if f.plan == plan]
    return found


def test_a_holdout_members_steps_are_withheld_at_the_same_times(
    shop: Shop, process: FollowupProcess
) -> None:
    (held,) = group_members("thank-you", "holdout", 1)
    (treated,) = group_members("thank-you", "treated", 1)
    for member_id in (held, treated):
        shop.enrol(member_id)
    shop.at(0.001)
    for n, member_id in enumerate((held, treated)):
        shop.buy(f"o-{n}", "100.00", member_id=member_id)
    run_until_caught_up(process)
    shop.at(8)
    shop.ledger.record_due()
    assert [s.state for s in only(shop, "thank-you", held).steps] == ["withheld"] * 3
    assert [s.state for s in only(shop, "thank-you", treated).steps] == ["due"] * 3
    assert only(shop, "thank-you", held).group == "holdout"
    withheld = [
        e
        for e in shop.events(held, kind="FollowupStepWithheld")
        if e["data"]["plan"] == "thank-you"
    ]
    assert [e["data"]["due_at"] for e in withheld] == [
        day(0.001).isoformat(),
        day(3.001).isoformat(),
        day(7.001).isoformat(),
    ]
    sent = [e["data"]["plan"] for e in shop.events(held, kind="FollowupStepDue")]
    assert "thank-you" not in sent, "nothing is sent for the holdout"


def test_a_purchase_before_day_7_stops_thank_you(shop: Shop, process: FollowupProcess) -> None:
    shop.enrol("m1")
    shop.at(0.001).buy("o-1", "100.00")
    run_until_caught_up(process)
    shop.at(5).buy("o-2", "20.00")
    thanks = only(shop, "thank-you")
    assert (thanks.state, thanks.reason, thanks.ended_at) == ("stopped", "purchased", day(5))
    assert [s.state for s in thanks.steps] == [only(shop, "thank-you").steps[0].state] * 2 + [
        "waiting"
    ]
    shop.at(8)
    shop.ledger.record_due()
    assert only(shop, "thank-you").steps[2].state == "waiting", "a stopped plan sends nothing"


def test_a_process_that_starts_late_stops_where_the_purchase_was(
    shop: Shop, process: FollowupProcess
) -> None:
    """The process behind the log: the follow-up comes out as it would have on time."""
    shop.enrol("m1")
    shop.at(0.001).buy("o-1", "100.00")
    shop.at(5).buy("o-2", "20.00")
    run_until_caught_up(process)  # on day 5, after the second purchase
    thanks = only(shop, "thank-you")
    assert (thanks.state, thanks.reason, thanks.ended_at) == ("stopped", "purchased", day(5))
    assert [s.state != "waiting" for s in thanks.steps] == [True, True, False]


def test_a_new_plan_version_applies_to_follow_ups_started_after_it(
    shop: Shop, process: FollowupProcess
) -> None:
    shop.enrol("m1")
    shop.at(0.001).buy("o-1", "100.00")
    run_until_caught_up(process)
    document = DEFAULT_PLANS["thank-you"].to_dict()
    document["steps"] = [{"delay_days": 1, "channel": "sms", "message_key": "thanks/v2"}]
    shop.ledger.publish_plan("thank-you", Plan.from_dict(document), "test")
    shop.enrol("m2")
    shop.at(0.002).buy("o-2", "100.00", member_id="m2")
    run_until_caught_up(process)
    first, second = only(shop, "thank-you"), only(shop, "thank-you", "m2")
    assert (first.plan_version, len(first.steps)) == (1, 3)
    assert (second.plan_version, [(s.channel, s.message_key) for s in second.steps]) == (
        2,
        [("sms", "thanks/v2")],
    )


def test_a_member_gone_quiet_for_180_days_enters_win_back(
    shop: Shop, process: FollowupProcess
) -> None:
    shop.enrol("m1")
    shop.at(0.001).buy("o-1", "100.00")
    shop.at(180.001)
    shop.ledger.record_due()
    run_until_caught_up(process)
    (quiet,) = shop.events(kind="BecameDormant")
    assert quiet["data"]["at"] == day(180.001).isoformat()
    win_back = only(shop, "win-back")
    assert win_back.trigger_at == day(180.001)
    assert win_back.steps[0].state in ("due", "withheld")


def test_a_plan_published_right_after_a_purchase_does_not_apply_to_it(
    shop: Shop, process: FollowupProcess
) -> None:
    """The purchase's triggers are judged under the plans in force at its place in the log,
    even when the publication follows it with no other member event between."""
    shop.enrol("m1")
    shop.at(0.001).buy("o-1", "100.00")
    plan = shop.ledger.followup_plans().current("thank-you")
    assert plan is not None
    shop.ledger.publish_plan("thank-you", replace(plan.plan, steps=plan.plan.steps[:1]), "test")
    run_until_caught_up(process)
    thanks = only(shop, "thank-you")
    assert (thanks.plan_version, len(thanks.steps)) == (1, 3)


def test_a_purchase_in_the_command_that_records_the_dormancy_stops_win_back(
    shop: Shop, process: FollowupProcess
) -> None:
    """Back on day 185 before any scheduler run: the dormancy of day 180 is recorded first, in
    the same command, and its win-back ends at the purchase, as it would have on time."""
    shop.enrol("m1")
    shop.at(0.5).buy("o-1", "40.00")
    run_until_caught_up(process)
    shop.at(185.5).buy("o-2", "25.00")
    run_until_caught_up(process)
    winback = only(shop, "win-back")
    assert (winback.trigger_at, winback.group) == (day(180.5), "treated")
    assert (winback.state, winback.reason) == ("stopped", "purchased")
    assert [s.state for s in winback.steps] == ["due", "waiting"]


def test_history_caught_up_late_starts_nothing(shop: Shop, process: FollowupProcess) -> None:
    """The scheduler recording a dormancy a year late (history brought in, a server off)."""
    shop.enrol("m1")
    shop.at(0.001).buy("o-1", "100.00")
    shop.at(400)
    shop.ledger.record_due()
    run_until_caught_up(process)
    assert len(shop.events(kind="BecameDormant")) == 1
    assert [f.plan for f in followups(shop) if f.plan == "win-back"] == []


def test_imported_history_starts_nothing(shop: Shop, process: FollowupProcess) -> None:
    imported = Cause("import:shop:1", Actor.importer("shop"))
    answers(shop.ledger).enrol("m1", "m1@example.com", None, imported)
    shop.at(0.001)
    answers(shop.ledger).record_purchase(
        "o-1", "m1", Decimal("100.00"), "USD", None, [], None, imported
    )
    run_until_caught_up(process)
    assert followups(shop) == []
    shop.at(1).buy("o-2", "100.00")  # live: a purchase, not a first one
    run_until_caught_up(process)
    assert sorted(f.plan for f in followups(shop)) == ["a-class"]


def test_a_class_is_judged_by_the_members_contribution_among_all(
    shop: Shop, process: FollowupProcess
) -> None:
    for n, amount in enumerate(["10.00", "20.00", "30.00", "400.00"]):
        shop.enrol(f"m{n}")
        shop.at(n / 1000 + 0.001).buy(f"o-{n}", amount, member_id=f"m{n}")
    run_until_caught_up(process)
    shop.at(1)
    for n in range(4):
        shop.buy(f"again-{n}", "1.00", member_id=f"m{n}")
    run_until_caught_up(process)
    called = sorted(
        f.member_id
        for n in range(4)
        for f in [shop.ledger.member_copy(f"m{n}")]
        for g in f.followups.by_id.values()
        if g.plan == "a-class" and g.trigger_at == day(1)
    )
    assert called == ["m3"], "only the top quarter is class A"


def test_the_effect_of_a_plan_to_the_digit(
    shop: Shop, process: FollowupProcess, tables: FollowupTables
) -> None:
    """Treated 40 of 100 converted, holdout 3 of 10: rates 0.4 and 0.3, uplift 0.1, and the
    Newcombe hybrid score interval [-0.2165, 0.3157] (Wald: [-0.1998, 0.3998])."""
    document = {
        "trigger": "enrolled",
        "steps": [{"delay_days": 0, "channel": "email", "message_key": "hello"}],
        "goal": {"event": "purchase", "within_days": 30},
        "holdout_percent": 10,
    }
    for name in DEFAULT_PLANS:  # only the plan measured here
        shop.ledger.publish_plan(name, replace(DEFAULT_PLANS[name], active=False), "test")
    shop.ledger.publish_plan("hello", Plan.from_dict(document), "test")
    treated = group_members("hello", "treated", 100)
    holdout = group_members("hello", "holdout", 10)
    for member_id in treated + holdout:
        shop.enrol(member_id)
    run_until_caught_up(process)
    shop.at(2)
    for member_id in treated[:40] + holdout[:3]:
        shop.buy(f"o-{member_id}", "25.00", member_id=member_id)
    shop.at(40)
    for member_id in treated[40:50]:  # after the window: not a conversion
        shop.buy(f"late-{member_id}", "25.00", member_id=member_id)
    run_until_caught_up(process)
    (hello,) = answer(tables, "hello", day(40))["plans"]
    assert (hello["entered"], hello["treated"]["members"], hello["holdout"]["members"]) == (
        110,
        100,
        10,
    )
    assert (hello["treated"]["converted"], hello["treated"]["conversion_rate"]) == (40, 0.4)
    assert (hello["holdout"]["converted"], hello["holdout"]["conversion_rate"]) == (3, 0.3)
    assert hello["treated"]["revenue_per_member"] == Decimal("10.00")  # 40 x 25 / 100
    assert hello["holdout"]["revenue_per_member"] == Decimal("7.50")  # 3 x 25 / 10
    uplift = hello["uplift"]
    assert round(uplift["conversion"], 10) == 0.1
    assert (round(uplift["interval"]["low"], 4), round(uplift["interval"]["high"], 4)) == (
        -0.2165,
        0.3157,
    )
    assert (
        round(uplift["wald_interval"]["low"], 4),
        round(uplift["wald_interval"]["high"], 4),
    ) == (-0.1998, 0.3998)
    assert uplift["revenue_per_member"] == Decimal("2.50")
    assert hello["steps"] == [
        {
            "n": 1,
            "reached": 100,
            "share_reached": 1.0,
            "withheld": 10,
            "outcomes": {"sent": 0, "failed": 0},
        }
    ]


# Replaying the log decides the same.

Step = tuple[str, int, int]  # (what, member, hours later)
steps_strategy = st.lists(
    st.tuples(
        st.sampled_from(["enrol", "buy", "buy", "refund", "wait"]),
        st.integers(0, 3),
        st.integers(1, 24 * 9),
    ),
    max_size=25,
)


def run_history(history: list[Step], eager: bool) -> dict[str, Any]:
    """Each member's follow-ups after ``history``, the process run after every step (eager) or
    once at the end (behind the log all along)."""
    clock = FixedClock(START)
    ledger = Ledger(env=IN_MEMORY, clock=clock, sealer=Vault.in_memory())
    process = FollowupProcess(ledger, FollowupTables(SQLiteConnection(":memory:")))
    shop = Shop(ledger, clock)
    enrolled: set[str] = set()
    bought: list[tuple[str, str]] = []
    hours = 0
    for n, (what, member, later) in enumerate(history):
        member_id = f"m{member}"
        hours += later
        clock.set(START + timedelta(hours=hours))
        ledger.record_due()
        if what == "enrol" and member_id not in enrolled:
            shop.enrol(member_id)
            enrolled.add(member_id)
        elif what == "buy" and member_id in enrolled:
            shop.buy(f"o-{n}", f"{10 + 40 * member}.00", member_id=member_id)
            bought.append((member_id, f"o-{n}"))
        elif what == "refund" and bought:
            _, order_id = bought.pop(0)
            shop.refund(order_id, f"r-{n}")
        if eager:
            run_until_caught_up(process)
    run_until_caught_up(process)
    ledger.record_due()
    return {
        member_id: sorted(
            (
                f.id,
                f.plan,
                f.plan_version,
                f.group,
                f.trigger_at,
                f.state,
                f.reason,
                tuple((s.due_at, s.state) for s in f.steps),
            )
            for f in ledger.member_copy(member_id).followups.by_id.values()
        )
        for member_id in sorted(enrolled)
    }


@settings(max_examples=60, deadline=None)
@given(steps_strategy)
def test_a_process_behind_the_log_decides_what_one_on_time_does(history: list[Step]) -> None:
    """Every member in the same group of the same plans, with the same steps recorded, whether
    the process ran after each change or once at the end."""
    assert run_history(history, eager=False) == run_history(history, eager=True)


def test_the_replay_comparison_sees_follow_ups_to_compare() -> None:
    """The property above compares something: a history with a stopped thank-you and an
    a-class call on either side."""
    history = [("enrol", 0, 1), ("buy", 0, 1), ("enrol", 1, 1), ("buy", 1, 48), ("buy", 0, 50)]
    eager = run_history(history, eager=True)
    plans = {f[1]: f[5] for f in eager["m0"]}
    assert plans == {"prospect": "stopped", "thank-you": "stopped", "a-class": "completed"}
    assert eager == run_history(history, eager=False)


def test_a_member_read_from_its_snapshot_holds_its_follow_ups(clock: FixedClock) -> None:
    ledger = Ledger(env=IN_MEMORY, clock=clock, sealer=Vault.in_memory(), snapshot_interval=2)
    shop = Shop(ledger, clock)
    process = FollowupProcess(ledger, FollowupTables(SQLiteConnection(":memory:")))
    shop.enrol("m1")
    shop.at(0.001).buy("o-1", "100.00")
    run_until_caught_up(process)
    shop.at(4)
    ledger.record_due()
    uid = member_uuid("m1")
    assert ledger.snapshots is not None and list(ledger.snapshots.get(uid))
    folded: Any = None
    for event in ledger.events.get(uid):
        folded = event.mutate(folded)
    ledger.writes.evict(uid)
    read: Member = ledger.repository.get(uid, deepcopy_from_cache=False)
    assert vars(read) == vars(folded)
    assert len(read.followups) == 3 and read.followups.active
    assert read.next_due_at(ledger.terms()) == folded.next_due_at(ledger.terms())


def test_the_thread_reads_page_after_page_and_waits_only_once_caught_up(
    shop: Shop, ledger: Ledger, tables: FollowupTables
) -> None:
    """A full page means more may be waiting, even when its last command is left for the
    next page: a process behind the log does not pause between pages."""
    for n in range(4):
        shop.enrol(f"m{n}")
    thread = FollowupThread(ledger, tables, poll_seconds=30)
    thread.process = FollowupProcess(ledger, tables, page=2)
    thread.start()
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if tables.max_tracking_id(NAME) == ledger.recorder.max_notification_id():
                break
            time.sleep(0.01)
        assert tables.max_tracking_id(NAME) == ledger.recorder.max_notification_id()
        assert thread.process.started == 4  # each member's prospect
    finally:
        thread.stop()


def test_the_thread_reads_back_what_it_started_without_waiting_a_poll(
    shop: Shop, ledger: Ledger, tables: FollowupTables
) -> None:
    """The follow-ups a pass starts are in the log after its page: the pass after it reads
    them at once, so the process is caught up without waiting its poll."""
    shop.enrol("m1")
    shop.at(0.001).buy("o-1", "100.00")
    thread = FollowupThread(ledger, tables, poll_seconds=30)
    thread.start()
    try:
        deadline = time.monotonic() + 10  # a bound well under the poll, not a measure
        while time.monotonic() < deadline:
            found = thread.process
            head = ledger.recorder.max_notification_id()
            if found is not None and found.started == 3 and tables.max_tracking_id(NAME) == head:
                break
            time.sleep(0.01)
        assert thread.process is not None and thread.process.started == 3
        assert tables.max_tracking_id(NAME) == ledger.recorder.max_notification_id()
    finally:
        thread.stop()


def test_the_follow_ups_a_page_starts_are_saved_together(
    shop: Shop, ledger: Ledger, process: FollowupProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One commit (and one lock of the event store) for several members' starts."""
    for n in range(3):
        shop.enrol(f"m{n}")
    save = ledger.writes.save
    saves: list[int] = []

    def counted(*aggregates: Any) -> int:
        saves.append(len(aggregates))
        return save(*aggregates)

    monkeypatch.setattr(ledger.writes, "save", counted)
    run_until_caught_up(process)
    assert saves == [3]
    assert [len(shop.events(f"m{n}", kind="FollowupStarted")) for n in range(3)] == [1, 1, 1]


def test_starts_met_by_another_writer_are_started_one_by_one(
    shop: Shop, ledger: Ledger, process: FollowupProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(3):
        shop.enrol(f"m{n}")
    save = ledger.writes.save
    saves: list[int] = []

    def conflicting_once(*aggregates: Any) -> int:
        saves.append(len(aggregates))
        if len(saves) == 1:  # another process wrote to one of the members meanwhile
            raise IntegrityError("member version taken")
        return save(*aggregates)

    monkeypatch.setattr(ledger.writes, "save", conflicting_once)
    run_until_caught_up(process)
    assert saves == [3, 1, 1, 1]
    assert [len(shop.events(f"m{n}", kind="FollowupStarted")) for n in range(3)] == [1, 1, 1]
    assert process.started == 3


def test_the_tables_take_a_position_alone_as_the_library_records_one(
    tables: FollowupTables,
) -> None:
    tables.insert_tracking(Tracking(NAME, 7))
    tables.insert_tracking(Tracking(NAME, 9))
    assert tables.max_tracking_id(NAME) == 9
