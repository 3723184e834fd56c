"""The event-handler API for services in a choreography: react to events, publish events.

    resources = Service("resources", publishes_to="resources.events")

    @resources.on("experiments.events", "experiment.created", fails_with="resources.failed")
    def allocate(event: Event, records: Records) -> Emit | None:
        ...
        return emit("resources.allocated", allocation_id=event["saga_id"])

`saga service mypkg.resources:resources` runs it (`saga_app.service_app`). No orchestrator is
involved: a service learns what to do from the events it subscribes to, and what it publishes
is the next service's cue. A tracked saga definition (`saga_app.tracked`) names the same events,
so the tracker knows how each saga went.

Delivery is at least once, so handlers are idempotent per saga (a record keyed by the saga id
says what was done), and publish the same event again when asked twice: the tracker and the
next service take a duplicate for what it is.

The `simulate` hooks, for demos and tests (`--simulate`): an event whose `simulate` object maps
the service's name to `fail` (publish the failure instead), `silent` (act, publish nothing),
`twice` (publish twice) or `out_of_order` (publish, then the event it reacted to once more, so
an earlier step's event arrives after a later one). Services carry `simulate` on to the events
they publish.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from saga_app.participant import Records

Event = dict[str, Any]
"""A domain event: the JSON object a service published."""


@dataclass(frozen=True)
class Emit:
    """An event for the service to publish: its type and fields; the runtime adds the saga id
    and carries the `simulate` hooks on."""

    type: str
    fields: dict[str, Any] = field(default_factory=dict)


def emit(type: str, **fields: Any) -> Emit:
    return Emit(type, fields)


Handler = Callable[[Event, Records], Emit | None]

SIMULATIONS = frozenset({"fail", "silent", "twice", "out_of_order"})


@dataclass(frozen=True)
class Reaction:
    """One handler and what it reacts to."""

    topic: str
    types: frozenset[str]
    handler: Handler
    fails_with: str | None
    """The event type a `fail` simulation publishes instead of running the handler."""


class Service:
    """A named service: the events it reacts to and the topic it publishes on. Topic names
    are given without `SAGA_TOPIC_PREFIX`."""

    def __init__(
        self, name: str, publishes_to: str, on_load: Callable[[Records], None] | None = None
    ) -> None:
        self.name = name
        self.publishes_to = publishes_to
        self.reactions: list[Reaction] = []
        self.on_load = on_load
        """Called once with the records after state recovery, to rebuild in-memory aggregates."""

    def on(
        self, topic: str, *types: str, fails_with: str | None = None
    ) -> Callable[[Handler], Handler]:
        """React to events of these `types` on `topic` (the `type` field)."""

        def decorator(fun: Handler) -> Handler:
            self.reactions.append(Reaction(topic, frozenset(types), fun, fails_with))
            return fun

        return decorator

    @property
    def topics(self) -> list[str]:
        return sorted({r.topic for r in self.reactions})

    def reaction(self, topic: str, event: Event) -> Reaction | None:
        """The handler for this event, or None if the service ignores it."""
        kind = event.get("type")
        return next((r for r in self.reactions if r.topic == topic and kind in r.types), None)

    def react(
        self, topic: str, event: Event, records: Records, *, simulate: bool
    ) -> list[tuple[str, Event]]:
        """The events to publish in answer to `event`, each with its topic (none if it means
        nothing here)."""
        reaction = self.reaction(topic, event)
        if reaction is None or event.get("republished_by") == self.name:
            return []
        hook = _simulation(event, self.name) if simulate else ""
        if hook == "fail" and reaction.fails_with is not None:
            failure = Emit(reaction.fails_with, {"reason": f"simulated failure of {self.name}"})
            return [(self.publishes_to, self._event(event, failure))]
        answer = reaction.handler(event, records)
        if answer is None or hook == "silent":
            return []
        published = (self.publishes_to, self._event(event, answer))
        if hook == "twice":
            return [published, published]
        if hook == "out_of_order":
            return [published, (topic, {**event, "republished_by": self.name})]
        return [published]

    def _event(self, cause: Event, answer: Emit) -> Event:
        carried: Event = {k: cause[k] for k in ("saga_id", "simulate") if k in cause}
        return {"type": answer.type, **carried, **answer.fields}


def _simulation(event: Event, service: str) -> str:
    hooks = event.get("simulate")
    hook = hooks.get(service, "") if isinstance(hooks, dict) else ""
    return hook if hook in SIMULATIONS else ""
