"""Notifications: sends each message once per saga; nothing to compensate."""

from __future__ import annotations

from saga_app import Participant, Records, Result, success
from topics import Command

notifications = Participant("notifications")


def _send(command: Command, records: Records) -> Result:
    if records.get(command.saga_id) is None:
        records.put(command.saga_id, {"status": "sent", "action": command.action})
    return success(notified=True)


notifications.action("send_confirmation")(_send)
notifications.action("notify_user")(_send)
