"""Who did it: the actor of every change, recorded beside its cause.

An API key (its public id, name and role), a member acting through a member token, the
scheduler recording what falls due, an import, or the system itself (the program's first
version, the one-time sealing of personal data written before it was encrypted).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Actor:
    kind: str  # "key", "member", "scheduler", "import" or "system"
    id: str | None = None
    name: str | None = None
    role: str | None = None
    member_id: str | None = None

    @classmethod
    def key(cls, key_id: str, name: str, role: str) -> Actor:
        return cls("key", id=key_id, name=name, role=role)

    @classmethod
    def member(cls, member_id: str) -> Actor:
        return cls("member", member_id=member_id)

    @classmethod
    def importer(cls, name: str, key_id: str | None = None) -> Actor:
        """An import named ``name`` (run through the API: with the key that sent it)."""
        return cls("import", id=key_id, name=name)

    @classmethod
    def system(cls, name: str) -> Actor:
        return cls("system", name=name)

    def to_dict(self) -> dict[str, str]:
        """The stored and shown form: ``{"kind": ...}`` and the fields its kind has."""
        fields = {"id": self.id, "name": self.name, "role": self.role, "member_id": self.member_id}
        return {"kind": self.kind, **{k: v for k, v in fields.items() if v is not None}}


SCHEDULER = Actor("scheduler")


@dataclass(frozen=True)
class Cause:
    """Why an event was recorded (the request, scheduler run or import line) and by whom."""

    id: str
    actor: Actor

    @classmethod
    def of(cls, cause: Cause | str) -> Cause:
        """A bare cause string is the system's own doing (used by tests and internal calls)."""
        return cause if isinstance(cause, Cause) else cls(cause, Actor.system("internal"))
