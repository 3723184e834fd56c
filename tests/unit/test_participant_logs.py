"""What a participant logs at info: the commands that did not go to plan, and every
compensation; a command that succeeded is logged at debug."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from structlog.testing import capture_logs

from saga_app.kafka_io import _Processing
from saga_app.participant import Participant, Records, Result, failure, success
from saga_app.participant_app import ParticipantWorker
from saga_app.settings import Settings
from topics import Command

shop = Participant("shop")


@shop.action("sell")
def sell(command: Command, records: Records) -> Result:
    return failure("sold out") if command.payload.get("sold_out") else success()


@shop.compensation("sell")
def refund(command: Command, records: Records) -> Result:
    return success()


def _command(saga_id: str, kind: str = "command", **payload: Any) -> bytes:
    command = Command(
        message_id=f"{saga_id}:sell:{kind}:1",
        saga_id=saga_id,
        saga_type="sale",
        step="sell",
        kind=kind,  # type: ignore[arg-type]
        action="sell",
        attempt=1,
        payload=payload,
        reply_to="saga.replies",
    )
    return command.model_dump_json().encode()


async def test_only_what_did_not_go_to_plan_is_logged_at_info(tmp_path: Path) -> None:
    worker = ParticipantWorker(Settings(data_dir=tmp_path, store="memory://"), [shop])
    records = Records({}, "shop")
    with capture_logs() as logs:
        for offset, raw in enumerate(
            [_command("s1"), _command("s2", sold_out=True), _command("s3", "compensation")]
        ):
            message = SimpleNamespace(
                topic="shop.commands", partition=0, offset=offset, key=b"s", value=raw
            )
            with _Processing(message):  # as the consumer does while a record is handled
                await worker.handle(shop, records, message)
    levels = {(line["saga_id"], line["outcome"]): line["log_level"] for line in logs}
    assert levels == {
        ("s1", "success"): "debug",
        ("s2", "failure"): "info",
        ("s3", "success"): "info",
    }
