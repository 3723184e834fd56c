"""The sagas a worker owns, summarised in memory for `GET /sagas` and `GET /stats`.

Views may not read every state from the table per request (JSON parsing of every saga) and may not
write it at all; the agent keeps this index up to date on each store, and the worker rebuilds it
when its partitions change, like the deadline index.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

from saga_app.state import SagaHead, SagaStatus

_ACTIVE = frozenset({SagaStatus.IN_PROGRESS, SagaStatus.COMPENSATING, SagaStatus.FAILED})


def summarise(state: SagaHead) -> dict[str, Any]:
    """The fields of a saga the list shows: who, what, where it is now."""
    current = state.steps[state.cursor] if state.status in _ACTIVE else None
    return {
        "saga_id": state.saga_id,
        "saga_type": state.saga_type,
        "status": state.status.value,
        "created_at": state.created_at,
        "updated_at": state.updated_at,
        "error": state.error,
        "step": current.name if current else None,
        "attempts": current.attempts if current else None,
    }


class SagaListing:
    """Summaries of the owned sagas, queryable newest first."""

    def __init__(self) -> None:
        self._summaries: dict[str, dict[str, Any]] = {}

    def __len__(self) -> int:
        return len(self._summaries)

    def update(self, state: SagaHead) -> None:
        self._summaries[state.saga_id] = summarise(state)

    def forget(self, saga_id: str) -> None:
        """Drop a saga deleted from the table (its retention passed)."""
        self._summaries.pop(saga_id, None)

    def clear(self) -> None:
        self._summaries = {}

    def rebuild(self, states: Iterable[SagaHead]) -> None:
        self._summaries = {s.saga_id: summarise(s) for s in states}

    def query(
        self, status: str | None = None, saga_type: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """The newest `limit` summaries matching the filters (O(n log limit))."""
        matching = (
            s
            for s in self._summaries.values()
            if (status is None or s["status"] == status)
            and (saga_type is None or s["saga_type"] == saga_type)
        )
        return heapq.nlargest(limit, matching, key=newest_first)

    def stats(self) -> dict[str, Any]:
        """Counts by status, and by type and status."""
        by_type: defaultdict[str, Counter[str]] = defaultdict(Counter)
        for s in self._summaries.values():
            by_type[s["saga_type"]][s["status"]] += 1
        return _stats(by_type)


def newest_first(summary: dict[str, Any]) -> tuple[float, str]:
    return (summary["created_at"], summary["saga_id"])


def merge_stats(parts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Add up the `stats()` of several workers."""
    by_type: defaultdict[str, Counter[str]] = defaultdict(Counter)
    for part in parts:
        for saga_type, counts in part["by_type"].items():
            by_type[saga_type].update(counts)
    return _stats(by_type)


def _stats(by_type: dict[str, Counter[str]]) -> dict[str, Any]:
    by_status: Counter[str] = Counter()
    for counts in by_type.values():
        by_status.update(counts)
    return {
        "by_status": dict(by_status),
        "by_type": {t: dict(c) for t, c in by_type.items()},
        "total": sum(by_status.values()),
    }
