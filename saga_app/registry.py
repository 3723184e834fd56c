"""The saga definitions a worker runs: loaded from your modules, found by type and version.

A module offers its sagas by defining (or importing) `SagaDefinition`s, or for sagas that are
tracked rather than orchestrated `TrackedSagaDefinition`s, at its top level; nothing else is
needed. A worker may load several versions of one saga type: a new saga starts on the
newest, a running saga keeps the version it started with (DESIGN.md: a saga is data).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator, Sequence
from types import ModuleType
from typing import Any, Protocol, TypeVar

from saga_app.definition import SagaDefinition
from saga_app.errors import DefinitionError, SagaModuleError, UnknownSagaType
from saga_app.tracked import TrackedSagaDefinition


class _Named(Protocol):
    @property
    def name(self) -> str: ...


T = TypeVar("T", bound=_Named)

AnyDefinition = SagaDefinition | TrackedSagaDefinition
"""An orchestrated or a tracked saga type."""

EXAMPLES = "saga_app.sagas"
"""The module a worker loads when it is given no `--sagas`: the example sagas of DESIGN.md."""


class SagaRegistry:
    """Saga definitions by (type, version); validated once, when the worker starts."""

    def __init__(self, definitions: Iterable[AnyDefinition]) -> None:
        self._by_key: dict[tuple[str, int], AnyDefinition] = {}
        for definition in definitions:
            key = (definition.name, definition.version)
            known = self._by_key.get(key)
            if known is not None and known is not definition:
                raise DefinitionError(
                    f"saga {definition.name!r} version {definition.version} is defined twice"
                )
            self._by_key[key] = definition
        self._newest: dict[str, AnyDefinition] = {}
        for (name, _), definition in sorted(self._by_key.items()):
            self._newest[name] = definition  # sorted by version: the last one wins

    def newest(self, saga_type: str) -> AnyDefinition:
        """The version new sagas of `saga_type` start on; `UnknownSagaType` if none is loaded."""
        try:
            return self._newest[saga_type]
        except KeyError:
            raise UnknownSagaType(saga_type, self._newest) from None

    def get(self, saga_type: str, version: int) -> AnyDefinition | None:
        """The definition a saga started on, or None when that version is not loaded here."""
        return self._by_key.get((saga_type, version))

    def versions(self, saga_type: str) -> list[int]:
        """The loaded versions of `saga_type`, oldest first."""
        return sorted(v for (name, v) in self._by_key if name == saga_type)

    @property
    def saga_types(self) -> list[str]:
        return sorted(self._newest)

    def participants(self) -> list[str]:
        """Every participant a loaded definition sends commands to (their topics are created)."""
        return sorted({s.participant for d in self.orchestrated() for s in d.steps})

    def orchestrated(self) -> list[SagaDefinition]:
        return [d for d in self if isinstance(d, SagaDefinition)]

    def tracked(self) -> list[TrackedSagaDefinition]:
        """The tracked saga types, every loaded version."""
        return [d for d in self if isinstance(d, TrackedSagaDefinition)]

    def domain_topics(self) -> list[str]:
        """The services' topics the tracked sagas' events are on (without the topic prefix)."""
        return sorted({topic for d in self.tracked() for topic in d.topics})

    def describe(self) -> list[dict[str, Any]]:
        """Every loaded definition as JSON-able data, newest version of each type first; `newest`
        marks the version new sagas start on."""
        return [
            {**d.describe(), "newest": d is self._newest[d.name]}
            for d in sorted(self, key=lambda d: (d.name, -d.version))
        ]

    def __iter__(self) -> Iterator[AnyDefinition]:
        return iter(self._by_key.values())

    def __len__(self) -> int:
        return len(self._by_key)


def definitions_in(module: object) -> list[AnyDefinition]:
    """The saga definitions a module has at its top level, each once."""
    found: dict[int, AnyDefinition] = {}
    for value in vars(module).values():
        if isinstance(value, SagaDefinition | TrackedSagaDefinition):
            found.setdefault(id(value), value)
    return list(found.values())


def import_user_module(name: str, given_as: str) -> ModuleType:
    """Import a module named on the command line; any failure becomes one clear line."""
    try:
        return importlib.import_module(name)
    except Exception as e:  # whatever the user's module raises is theirs to fix: say which
        raise SagaModuleError(given_as, f"cannot be imported: {type(e).__name__}: {e}") from e


def load_named(specs: Sequence[str], kind: type[T], example: str) -> list[T]:
    """Resolve `module:attribute` specs to `kind` objects (an attribute may be a list of them),
    each `name` given once: how `saga participant` and `saga service` find yours."""
    found: list[T] = []
    what = kind.__name__
    for spec in specs:
        module_name, _, attribute = spec.partition(":")
        if not module_name or not attribute:
            raise SagaModuleError(spec, f"expected module:attribute, e.g. {example}")
        value = getattr(import_user_module(module_name, spec), attribute, None)
        values = list(value) if isinstance(value, list | tuple) else [value]
        objects = [v for v in values if isinstance(v, kind)]
        if not values or len(objects) != len(values):
            raise SagaModuleError(spec, f"{attribute!r} is not a {what} (or a list of them)")
        found.extend(objects)
    names = [o.name for o in found]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise SagaModuleError(", ".join(specs), f"{what.lower()} {twice[0]!r} is given twice")
    return found


def load_sagas(modules: Sequence[str]) -> SagaRegistry:
    """Import `modules` and register their definitions; `SagaModuleError` names what is wrong."""
    definitions: list[AnyDefinition] = []
    for name in modules:
        found = definitions_in(import_user_module(name, name))
        if not found:
            raise SagaModuleError(
                name, "defines no SagaDefinition or TrackedSagaDefinition at its top level"
            )
        definitions.extend(found)
    try:
        return SagaRegistry(definitions)
    except DefinitionError as e:
        raise SagaModuleError(", ".join(modules), str(e)) from e
