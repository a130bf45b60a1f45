"""Tiers: upgrades at once, 365 days of grace, reviews move down one tier, refunds undo upgrades."""

from __future__ import annotations

import pytest

from .storefront import Shop, day


@pytest.fixture
def member(shop: Shop) -> Shop:
    shop.enrol("m1")
    return shop


def test_an_upgrade_happens_on_the_purchase_that_crosses_the_threshold(member: Shop) -> None:
    assert member.buy("o-1", "499.99")["tier"] == "bronze"
    assert member.at(3).buy("o-2", "0.01")["tier"] == "silver"
    upgrades = member.events(kind="TierUpgraded")
    assert len(upgrades) == 1
    assert upgrades[0]["data"]["from_tier"] == "bronze"
    assert upgrades[0]["data"]["to_tier"] == "silver"
    assert upgrades[0]["data"]["order_id"] == "o-2"
    tier = member.status()["tier"]
    assert tier["since"] == day(3).isoformat()
    assert tier["review_at"] == day(368).isoformat()


def test_one_purchase_may_jump_several_tiers(member: Shop) -> None:
    result = member.buy("o-1", "5000.00")
    assert result["tier"] == "platinum"
    assert result["points_awarded"] == 5000
    upgrades = member.events(kind="TierUpgraded")
    assert [(u["data"]["from_tier"], u["data"]["to_tier"]) for u in upgrades] == [
        ("bronze", "platinum")
    ]


def test_qualifying_spend_is_the_trailing_365_days(member: Shop) -> None:
    member.buy("o-1", "300.00")
    member.at(365).buy("o-2", "250.00")
    assert member.tier() == "bronze", "day 0 is out of the window (0, 365]"
    assert member.status()["tier"]["qualifying_spend"] == "250.00"
    member.at(364 + 365).buy("o-3", "250.00")
    assert member.tier() == "silver"


def test_a_tier_is_held_for_365_days_then_moves_down_one_tier_at_the_review(
    member: Shop,
) -> None:
    member.buy("o-1", "5000.00")  # platinum, review day 365
    member.at(364.99)
    assert member.tier() == "platinum"
    member.at(365)
    tier = member.status()["tier"]
    assert tier["name"] == "gold", "at most one tier down, although spend is 0"
    assert tier["since"] == day(365).isoformat()
    assert tier["review_at"] == day(730).isoformat()
    member.at(730)
    assert member.tier() == "silver"
    member.at(1095)
    status = member.status()
    assert status["tier"]["name"] == "bronze"
    assert status["tier"]["review_at"] is None
    member.ledger.record_due()
    downgrades = member.events(kind="TierDowngraded")
    assert [(d["data"]["to_tier"], d["data"]["reason"]) for d in downgrades] == [
        ("gold", "review"),
        ("silver", "review"),
        ("bronze", "review"),
    ]


def test_spend_that_still_qualifies_at_the_review_retains_the_tier(member: Shop) -> None:
    member.buy("o-1", "500.00")  # silver, review day 365
    member.at(200).buy("o-2", "500.00")
    member.at(365)
    tier = member.status()["tier"]
    assert tier["name"] == "silver"
    assert tier["review_at"] == day(730).isoformat()
    member.ledger.record_due()
    assert [e["type"] for e in member.events()][-1] == "TierRetained"
    member.at(730)
    assert member.tier() == "bronze", "nothing bought in (365, 730]"


def test_the_review_checks_spend_against_the_tier_held_not_only_the_lowest(
    member: Shop,
) -> None:
    member.buy("o-1", "2000.00")  # gold, review day 365
    member.at(100).buy("o-2", "600.00")  # trailing spend at the review: 600 (silver only)
    member.at(365)
    tier = member.status()["tier"]
    assert tier["name"] == "silver"
    assert tier["review_at"] == day(730).isoformat()


def test_an_upgrade_inside_the_grace_restarts_the_review(member: Shop) -> None:
    member.buy("o-1", "500.00")  # silver, review day 365
    member.at(100).buy("o-2", "1500.00")  # gold, review day 465
    assert member.status()["tier"]["review_at"] == day(465).isoformat()
    member.at(365)
    assert member.tier() == "gold"
    member.at(465)
    assert member.tier() == "silver", "spend in (100, 465] is 0: one tier down"


def test_a_refund_that_removes_the_spend_behind_the_upgrade_downgrades_at_once(
    member: Shop,
) -> None:
    member.buy("o-1", "300.00")
    member.at(10).buy("o-2", "250.00")  # silver
    result = member.at(20).refund("o-2", "r-1", "50.01")
    assert result["tier"] == "bronze"
    assert result["tier_changed"] is True
    downgrade = member.events(kind="TierDowngraded")[0]["data"]
    assert (downgrade["from_tier"], downgrade["to_tier"], downgrade["reason"]) == (
        "silver",
        "bronze",
        "refund",
    )
    tier = member.status()["tier"]
    assert tier["since"] == day(0).isoformat()
    assert tier["review_at"] is None


def test_a_refund_that_leaves_enough_spend_keeps_the_tier(member: Shop) -> None:
    member.buy("o-1", "300.00")
    member.at(10).buy("o-2", "250.00")  # silver with 550
    result = member.at(20).refund("o-2", "r-1", "50.00")
    assert result["tier"] == "silver"
    assert result["tier_changed"] is False
    assert member.events(kind="TierDowngraded") == []


def test_a_refund_of_an_old_purchase_does_not_undo_a_later_upgrade(member: Shop) -> None:
    member.buy("o-1", "100.00")
    member.at(400).buy("o-2", "500.00")  # silver; o-1 is outside its window
    member.at(410).refund("o-1", "r-1")
    assert member.tier() == "silver"


def test_a_refund_only_undoes_the_upgrade_when_its_spend_no_longer_qualifies(
    member: Shop,
) -> None:
    member.buy("o-1", "300.00")
    member.at(300).buy("o-2", "250.00")  # silver on 550, review day 665
    # At day 400 the trailing spend is only 250, but the upgrade's 550 still reaches silver after
    # a refund of 1.00: the grace holds.
    result = member.at(400).refund("o-2", "r-1", "1.00")
    assert result["tier"] == "silver"
    assert member.events(kind="TierDowngraded") == []
    member.at(665)
    assert member.tier() == "bronze", "the review at the anniversary moves it down"


def test_a_refund_downgrade_of_a_jump_stops_at_the_tier_the_rest_still_reaches(
    member: Shop,
) -> None:
    member.buy("o-1", "2100.00")  # bronze -> gold
    result = member.at(5).refund("o-1", "r-1", "1000.00")  # 1100 left: silver
    assert result["tier"] == "silver"
    downgrade = member.events(kind="TierDowngraded")[0]["data"]
    assert (downgrade["to_tier"], downgrade["reason"]) == ("silver", "refund")


def test_a_second_refund_of_a_jump_can_take_the_rest_of_the_upgrade_back(member: Shop) -> None:
    member.buy("o-1", "2100.00")  # bronze -> gold
    member.at(5).refund("o-1", "r-1", "1000.00")  # silver
    result = member.at(6).refund("o-1", "r-2", "1000.00")  # 100 left: bronze
    assert result["tier"] == "bronze"
    assert member.status()["tier"]["review_at"] is None


def test_refunding_a_later_upgrade_restores_the_earlier_tier_and_its_review(
    member: Shop,
) -> None:
    member.buy("o-1", "500.00")  # silver, review day 365
    member.at(100).buy("o-2", "1500.00")  # gold, review day 465
    result = member.at(110).refund("o-2", "r-1")
    assert result["tier"] == "silver"
    tier = member.status()["tier"]
    assert tier["since"] == day(0).isoformat()
    assert tier["review_at"] == day(365).isoformat()


# Status fields.


def test_status_shows_spend_needed_for_the_next_tier_and_to_keep_this_one(member: Shop) -> None:
    member.buy("o-1", "600.00")  # silver, review day 365
    member.at(100).buy("o-2", "150.50")
    tier = member.status()["tier"]
    assert tier["name"] == "silver"
    assert tier["qualifying_spend"] == "750.50"
    assert tier["next"] == {"name": "gold", "spend_needed": "1249.50"}
    # Spend counted at the review is in (0, 365]: o-1 on day 0 no longer counts then.
    assert tier["spend_to_keep"] == "349.50"
    assert tier["review_at"] == day(365).isoformat()


def test_the_top_tier_has_no_next_tier(member: Shop) -> None:
    member.buy("o-1", "6000.00")
    tier = member.status()["tier"]
    assert tier["name"] == "platinum"
    assert tier["next"] is None
    assert tier["spend_to_keep"] == "5000.00"


def test_bronze_has_nothing_to_keep(member: Shop) -> None:
    member.buy("o-1", "100.00")
    tier = member.status()["tier"]
    assert tier["spend_to_keep"] == "0.00"
    assert tier["review_at"] is None
    assert tier["next"] == {"name": "silver", "spend_needed": "400.00"}


def test_a_refund_keeps_the_tier_that_later_spend_reaches_on_its_own(member: Shop) -> None:
    member.buy("o-1", "300.00")
    member.at(10).buy("o-2", "250.00")  # silver
    member.at(20).buy("o-3", "400.00")  # 950
    result = member.at(30).refund("o-2", "r-1")  # 700 left in the window
    assert result["tier"] == "silver"
    assert member.events(kind="TierDowngraded") == []
