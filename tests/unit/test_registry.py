"""Loading a team's saga modules: versions, duplicates and modules that are not usable."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from saga_app.errors import SagaModuleError, UnknownSagaType
from saga_app.participant_app import load_participants
from saga_app.registry import EXAMPLES, SagaRegistry, load_sagas
from tests.unit.fixtures.parcel_sagas import SHIP_PARCEL_V1, SHIP_PARCEL_V2

PARCELS = "tests.unit.fixtures.parcel_sagas"
BROKEN = "tests.unit.fixtures.broken_sagas"


def test_a_module_offers_every_saga_definition_at_its_top_level() -> None:
    """Both versions in the module are loaded; new sagas start on the newest."""
    sagas = load_sagas([PARCELS])
    assert sagas.versions("ship_parcel") == [1, 2]
    assert sagas.newest("ship_parcel") is SHIP_PARCEL_V2
    assert sagas.get("ship_parcel", 1) is SHIP_PARCEL_V1
    assert sagas.get("ship_parcel", 3) is None
    assert sagas.participants() == ["packer", "shipper"]


def test_describe_marks_the_version_new_sagas_start_on() -> None:
    """GET /definitions lists every loaded version, newest first, and says which is newest."""
    described = load_sagas([PARCELS]).describe()
    assert [(d["name"], d["version"], d["newest"]) for d in described] == [
        ("ship_parcel", 2, True),
        ("ship_parcel", 1, False),
    ]


def test_the_examples_and_a_team_module_load_side_by_side() -> None:
    """Several modules add up; an unknown type names every loaded one."""
    sagas = load_sagas([EXAMPLES, PARCELS])
    assert sagas.saga_types == [
        "create_experiment",
        "create_experiment_choreo",
        "create_order",
        "create_run",
        "ship_parcel",
    ]
    with pytest.raises(UnknownSagaType, match=r"known types: create_experiment, .*ship_parcel"):
        sagas.newest("create_pizza")


def test_the_same_definition_imported_twice_counts_once() -> None:
    """A module re-exporting another's definitions is no conflict."""
    assert len(SagaRegistry([SHIP_PARCEL_V1, SHIP_PARCEL_V1, SHIP_PARCEL_V2])) == 2


@pytest.mark.parametrize(
    ("modules", "problem"),
    [
        (["no_such_module_here"], "no_such_module_here: cannot be imported: ModuleNotFoundError"),
        ([BROKEN], "cannot be imported: RuntimeError: the team's"),
        (
            ["tests.unit.fixtures"],
            "defines no SagaDefinition or TrackedSagaDefinition at its top level",
        ),
        (
            [PARCELS, "tests.unit.fixtures.parcel_v1_again"],
            "saga 'ship_parcel' version 1 is defined twice",
        ),
    ],
)
def test_unusable_modules_are_refused_with_what_is_wrong(modules: list[str], problem: str) -> None:
    """A module that does not import, has no sagas, or repeats a version stops the load."""
    with pytest.raises(SagaModuleError, match=re.escape(problem)):
        load_sagas(modules)


def test_saga_worker_with_a_broken_module_exits_non_zero_with_one_line() -> None:
    """`saga worker --sagas` with a bad module prints the module and the problem, no traceback."""
    command = [sys.executable, "-m", "saga_app.cli", "worker", "--sagas", BROKEN]
    run = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 2
    assert run.stderr.strip() == (
        "saga worker: saga module tests.unit.fixtures.broken_sagas: "
        "cannot be imported: RuntimeError: the team's module has a bug"
    )


@pytest.mark.parametrize(
    ("specs", "problem"),
    [
        (["participants"], "expected module:attribute"),
        (["participants:nothing"], "'nothing' is not a Participant"),
        (["participants.orders:orders", "participants:EXAMPLES"], "'orders' is given twice"),
    ],
)
def test_participant_specs_that_name_no_participant_are_refused(
    specs: list[str], problem: str
) -> None:
    """`saga participant` needs module:attribute naming a Participant (or a list of them)."""
    with pytest.raises(SagaModuleError, match=problem):
        load_participants(specs)


def test_participant_specs_resolve_to_participants() -> None:
    """A single participant and a list of them both work."""
    found = load_participants(["participants.orders:orders", "participants.payments:payments"])
    assert [p.name for p in found] == ["orders", "payments"]
    assert len(load_participants(["participants:EXAMPLES"])) == 8
