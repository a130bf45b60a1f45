"""The library's repository, reconstructing aggregates without a per-event runtime check.

``eventsourcing.application.project_aggregate`` asserts ``isinstance(event, CanMutateProtocol)``
for every event it applies: a check against a runtime-checkable ``Protocol``, about 10 µs an
event, the largest single cost of bringing a cached member up to date or loading one from its
snapshot. Every event the ledger decodes is one of its own aggregate events, all of which can
mutate, so the projector here applies them without asking.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from uuid import UUID

from eventsourcing.application import Repository, project_aggregate


def project(aggregate: Any, domain_events: Iterable[Any]) -> Any:
    """Each event's ``mutate`` in turn (``project_aggregate`` without its assertion)."""
    for domain_event in domain_events:
        aggregate = domain_event.mutate(aggregate)
    return aggregate


class LedgerRepository(Repository[UUID]):
    def get(
        self,
        aggregate_id: UUID,
        *,
        version: int | None = None,
        projector_func: Any = project_aggregate,
        fastforward_skipping: bool = False,
        deepcopy_from_cache: bool = True,
    ) -> Any:
        return super().get(
            aggregate_id,
            version=version,
            projector_func=project if projector_func is project_aggregate else projector_func,
            fastforward_skipping=fastforward_skipping,
            deepcopy_from_cache=deepcopy_from_cache,
        )
