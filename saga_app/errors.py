"""The errors saga_app raises: one base class, so callers can catch everything of ours at once."""

from __future__ import annotations

from collections.abc import Iterable


class SagaError(Exception):
    """Base of every error raised by saga_app."""


class DefinitionError(SagaError):
    """Raised when a retry policy, step or saga definition is built with invalid values."""


class UnknownSagaType(SagaError):
    """Raised when a saga type is not among the registered definitions.

    Attributes:
        saga_type: the type that was asked for.
        known: the registered types, sorted.
    """

    def __init__(self, saga_type: str, known: Iterable[str]) -> None:
        self.saga_type = saga_type
        self.known = tuple(sorted(known))
        super().__init__(
            f"unknown saga type {saga_type!r}; known types: {', '.join(self.known) or '(none)'}"
        )


class DefinitionMismatch(SagaError):
    """Raised when `decide` gets a definition other than the one the saga was started with."""


class InvalidEvent(SagaError):
    """Raised when `decide` gets an event it can never apply, e.g. a start without a saga_id."""


class SagaModuleError(SagaError):
    """Raised when a module given to `--sagas` cannot be loaded: it does not import, defines no
    saga, or defines a saga type and version another module defines too.

    Attributes:
        module: the module (or modules) at fault, as given.
        problem: what is wrong with it.
    """

    def __init__(self, module: str, problem: str) -> None:
        self.module = module
        self.problem = problem
        super().__init__(f"saga module {module}: {problem}")


class BrokerConnectionError(SagaError):
    """Raised by the preflight check when the Kafka brokers cannot be used with these settings."""


class AuthenticationFailed(BrokerConnectionError):
    """Raised when a broker rejects the SASL login (wrong user, password or mechanism)."""


class CertificateNotTrusted(BrokerConnectionError):
    """Raised when a broker's TLS certificate is not signed by a CA we trust (SAGA_SSL_CAFILE)."""


class BrokerUnreachable(BrokerConnectionError):
    """Raised when no bootstrap server answered within the preflight deadline."""


class ClusterMismatch(SagaError):
    """Raised when the cluster does not fit the settings: an existing saga topic or changelog
    with another partition count than SAGA_PARTITIONS, or fewer brokers than replicas."""
