"""The member's personal data: an email and a name, held only sealed under the member's own key.

The ledger never records them in plain text. A ``Sealer`` (``adapters/vault.py``) seals them
with AES-GCM under a data key of the member's own, and computes a keyed digest of the
normalised email for the self-referral rule. Erasure destroys the data key (crypto-shredding):
the sealed values and the digest, kept in the ledger, can then be opened by nobody.

Members enrolled before this (``Enrolled`` version 1) held their email and name in plain text;
they are upcast to ``legacy_email``/``legacy_name`` and sealed once (``PersonalDataSealed``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from domain.members.events import MemberEvent

if TYPE_CHECKING:
    from domain.members.member import Member

FIELDS = ("email", "name")


class Sealer(Protocol):
    def seal(self, member_id: str, field: str, text: str) -> str:
        """``text``, the member's ``field``, sealed under its data key (created on first use)."""
        ...

    def open(self, member_id: str, field: str, sealed: str) -> str | None:
        """The plain text, or None once the member's data key is destroyed."""
        ...

    def digest(self, member_id: str, text: str) -> str | None:
        """A keyed digest of ``text`` under the member's key; None once it is destroyed."""
        ...

    def erase(self, member_id: str) -> bool:
        """Destroy the member's data key; False if there was none."""
        ...

    def prepare(self, member_ids: list[str]) -> None:
        """Make the keys of many members about to be enrolled at once (an import's batch)."""
        ...


class NoSealer:
    """The sealer of a ledger that only reads: it opens nothing and seals nothing."""

    def seal(self, member_id: str, field: str, text: str) -> str:
        raise RuntimeError("this ledger has no personal-data vault: it cannot enrol members")

    def open(self, member_id: str, field: str, sealed: str) -> str | None:
        raise RuntimeError("this ledger has no personal-data vault: it cannot open personal data")

    def digest(self, member_id: str, text: str) -> str | None:
        raise RuntimeError("this ledger has no personal-data vault")

    def prepare(self, member_ids: list[str]) -> None:
        pass

    def erase(self, member_id: str) -> bool:
        raise RuntimeError("this ledger has no personal-data vault")


@dataclass(frozen=True)
class OpenedPersonalData:
    """What is held about a member, in plain text, for the one request that asked."""

    email: str | None
    name: str | None
    erased: bool

    @property
    def state(self) -> str:
        return "erased" if self.erased else "held"


@dataclass(frozen=True)
class Erasure:
    """The receipt of an erasure: which fields, when, by whom."""

    member_id: str
    erased: list[str]
    erased_at: datetime
    actor: dict[str, str] | None


def normalise_email(email: str) -> str:
    """Lower-cased, with any +tag removed from the local part."""
    local, _, domain = email.strip().lower().partition("@")
    return f"{local.split('+', 1)[0]}@{domain}"


@dataclass
class PersonalData:
    sealed_email: str | None
    sealed_name: str | None
    email_digest: str | None
    erased: bool = False
    # Plain values recorded by an older version, until they are sealed; never in a snapshot.
    legacy_email: str | None = None
    legacy_name: str | None = None

    def fields(self) -> list[str]:
        """The personal fields held (sealed or, for an old member, plain)."""
        held = {
            "email": self.sealed_email or self.legacy_email,
            "name": self.sealed_name or self.legacy_name,
        }
        return [name for name in FIELDS if held[name] is not None]

    @property
    def state(self) -> str:
        return "erased" if self.erased else "held"


class PersonalDataSealed(MemberEvent):
    """The plain email and name an older version recorded, sealed under the member's key."""

    TOPIC = "domain.members:Member.PersonalDataSealed"
    sealed_email: str
    sealed_name: str | None
    email_digest: str

    def change(self, member: Member) -> None:
        member.personal = PersonalData(self.sealed_email, self.sealed_name, self.email_digest)


class PersonalDataErased(MemberEvent):
    """The member's data key was destroyed: its email and name can no longer be read."""

    TOPIC = "domain.members:Member.PersonalDataErased"
    erased: list[str]

    def change(self, member: Member) -> None:
        member.personal = PersonalData(None, None, None, erased=True)
