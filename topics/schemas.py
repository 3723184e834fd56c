"""JSON Schemas of the contract messages, generated from the pydantic models.

What a service in another language needs to speak to the orchestrator: `saga schema` writes one
file per message type. Generated, never hand-written, so they cannot drift from the parser.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter

from topics.messages import (
    AbortSaga,
    Command,
    DeadLetter,
    ObservedEvent,
    Reply,
    RetrySaga,
    SagaEvent,
    SagaOutcome,
    SagaRequest,
    SagaTimeout,
    StartSaga,
)

MESSAGES: dict[str, type[BaseModel]] = {
    "start": StartSaga,
    "abort": AbortSaga,
    "retry": RetrySaga,
    "timeout": SagaTimeout,
    "command": Command,
    "reply": Reply,
    "event": SagaEvent,
    "dead_letter": DeadLetter,
    "observed": ObservedEvent,
    "outcome": SagaOutcome,
}
"""Each message type by the name of its schema file."""


def json_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schema of every message type, plus `request`: any value of `saga.requests`."""
    schemas = {name: model.model_json_schema(mode="validation") for name, model in MESSAGES.items()}
    schemas["request"] = TypeAdapter(SagaRequest).json_schema(mode="validation")
    for name, schema in schemas.items():
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema.setdefault("title", name)
    return schemas


def write_schemas(folder: Path) -> list[Path]:
    """Write `<name>.schema.json` for every message type into `folder`; returns the files."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in sorted(json_schemas().items()):
        path = folder / f"{name}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
