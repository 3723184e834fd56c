"""The participant API without Kafka: handlers by action, `simulate` hooks only when turned on."""

from __future__ import annotations

from saga_app import Participant, Records, Result, failure, success
from topics import Command

shop = Participant("shop")


@shop.action("sell")
def sell(command: Command, records: Records) -> Result:
    if records.get(command.saga_id) is None:
        records.put(command.saga_id, {"sold": command.payload.get("qty", 0)})
    return success(receipt=command.saga_id)


@shop.compensation("unsell")
def unsell(command: Command, records: Records) -> Result:
    return failure("nothing to undo") if records.get(command.saga_id) is None else success()


def _command(action: str = "sell", **payload: object) -> Command:
    return Command(
        message_id="s1:sell:command:1", saga_id="s1", saga_type="t", step="sell",
        kind="command", action=action, attempt=1, payload=payload, reply_to="r",
    )  # fmt: skip


def test_a_handler_runs_by_action_and_writes_its_records() -> None:
    """The action's handler decides, and what it stores is there for the next command."""
    table: dict[bytes, bytes] = {}
    result = shop.handle(_command(qty=3), Records(table, "shop"))
    assert result == success(receipt="s1")
    assert Records(table, "shop").get("s1") == {"sold": 3}


def test_an_action_without_a_handler_fails_and_says_which() -> None:
    """A command nobody handles is a failure that names the participant and the action."""
    result = shop.handle(_command("refund"), Records({}, "shop"))
    assert result == failure("shop has no command handler for 'refund'")


def test_simulate_hooks_are_ignored_unless_turned_on() -> None:
    """A payload asking to fail a step fails it only in a process run with simulate on."""
    command = _command(simulate={"sell": "fail"})
    assert shop.handle(command, Records({}, "shop")) == success(receipt="s1")
    simulated = shop.handle(command, Records({}, "shop"), simulate=True)
    assert simulated == failure("simulated failure of sell")
