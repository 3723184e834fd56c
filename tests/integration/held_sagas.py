"""`held_order`: `create_order` whose stock reservation waits far longer than any test for its
answer, and which has no deadline, so a saga parked there stays `in_progress` until someone acts.

Tests that abort a running saga use it: with the example's 3 s step timeout the saga compensates
by itself after its attempts (about 10 s, less than a loaded machine may take to deliver the
abort), so an abort that did nothing could pass and a slow one could lose the race. A worker runs
it beside the examples with `SAGA_SAGAS=saga_app.sagas,tests.integration.held_sagas`; it uses the
example participants and payload, so `{"simulate": {"reserve_stock": "timeout"}}` parks it.
"""

from dataclasses import replace

from saga_app import sagas as examples  # not the definition: the worker would load it from here

HOLD = 3600.0
"""Seconds reserve_stock waits for an answer: an hour, far past any test's pytest timeout."""

HELD_ORDER = replace(
    examples.CREATE_ORDER,
    name="held_order",
    deadline=None,
    steps=tuple(
        replace(step, timeout=HOLD) if step.name == "reserve_stock" else step
        for step in examples.CREATE_ORDER.steps
    ),
)
