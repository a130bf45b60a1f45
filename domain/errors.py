"""Named domain errors: what went wrong in the loyalty domain's words, never an HTTP status."""

from __future__ import annotations


class DomainError(Exception):
    """A command that the ledger refuses; nothing was recorded."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class NotFound(DomainError):
    """The command names something the ledger has never recorded."""


class UnknownMember(NotFound):
    def __init__(self, member_id: str) -> None:
        super().__init__(f"member {member_id!r} is not enrolled")


class UnknownOrder(NotFound):
    def __init__(self, order_id: str) -> None:
        super().__init__(f"order {order_id!r} has no recorded purchase")


class UnknownRedemption(NotFound):
    def __init__(self, redemption_id: str) -> None:
        super().__init__(f"redemption {redemption_id!r} was never recorded")


class Conflict(DomainError):
    """The same id was used before with different content."""


class RuleViolation(DomainError):
    """Well-formed, but the program's rules do not allow it."""


class InsufficientPoints(RuleViolation):
    pass


class OverRefund(RuleViolation):
    pass


class WrongCurrency(RuleViolation):
    pass


class InvalidAmount(RuleViolation):
    pass


class UnknownReward(RuleViolation):
    pass


class UnknownGuarantee(RuleViolation):
    pass


class OccurredAtOutOfRange(RuleViolation):
    pass


class EnrolledAtOutOfRange(RuleViolation):
    """``enrolled_at`` more than 5 minutes ahead of now."""


class RedemptionAlreadyCancelled(RuleViolation):
    pass


class InvalidInput(DomainError):
    """Several fields break the rules at once, e.g. a program version that cannot be published."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        first = next(iter(errors.items()), ("", ["invalid input"]))
        super().__init__(f"{first[0]}: {first[1][0]}" if first[0] else first[1][0])
        self.errors = errors


class NoGuarantee(RuleViolation):
    pass


class GuaranteeWindowClosed(RuleViolation):
    pass


class GuaranteeAlreadyClaimed(RuleViolation):
    pass


class EvidenceRequired(RuleViolation):
    pass


class UnknownReferralCode(RuleViolation):
    def __init__(self, code: str) -> None:
        super().__init__(f"no member has the referral code {code!r}", "referral_code")


class SelfReferral(RuleViolation):
    def __init__(self) -> None:
        super().__init__("a member cannot be referred with their own code", "referral_code")


class UnknownFollowup(NotFound):
    def __init__(self, followup: str) -> None:
        super().__init__(f"follow-up {followup!r} was never started")


class UnknownFollowupStep(NotFound):
    def __init__(self, followup: str, step: int) -> None:
        super().__init__(f"follow-up {followup!r} has no step {step}", "step")


class StepNotDue(RuleViolation):
    """An outcome reported for a step the shop was never told of (not due yet, or withheld)."""


class UnknownPlan(NotFound):
    def __init__(self, name: str) -> None:
        super().__init__(f"no follow-up plan {name!r} was ever published")
