"""How every Kafka client of ours connects: one translation of `Settings`, and a preflight check.

Faust-free on purpose: the producer of `SagaClient`, the admin client of `ensure_topics`, the
test harness and the Faust app (`kafka_io.make_faust_app`, which wraps the same pieces in Faust's
credentials) all take their security options from here, so no client is left on PLAINTEXT.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import Any

from aiokafka.conn import create_conn
from aiokafka.errors import (
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
from aiokafka.helpers import create_ssl_context
from aiokafka.protocol.metadata import MetadataRequest

from saga_app.errors import AuthenticationFailed, BrokerUnreachable, CertificateNotTrusted
from saga_app.settings import Settings

PREFLIGHT_TIMEOUT = 20.0
"""Seconds `check_connection` keeps trying to reach a broker that refuses connections."""


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context for SSL and SASL_SSL (hostname checked), else None."""
    if not settings.security_protocol.endswith("SSL"):
        return None
    context: ssl.SSLContext = create_ssl_context(
        cafile=settings.ssl_cafile or None,
        certfile=settings.ssl_certfile or None,
        keyfile=settings.ssl_keyfile or None,
    )
    return context


def security_options(settings: Settings) -> dict[str, Any]:
    """aiokafka's security keyword arguments (the same for producers, consumers and admins)."""
    options: dict[str, Any] = {"security_protocol": settings.security_protocol}
    context = ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if settings.security_protocol.startswith("SASL_"):
        options["sasl_mechanism"] = settings.sasl_mechanism
        options["sasl_plain_username"] = settings.sasl_username
        options["sasl_plain_password"] = settings.sasl_password
    return options


def aiokafka_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for any aiokafka client: bootstrap servers plus `security_options`."""
    return {"bootstrap_servers": settings.bootstrap_servers, **security_options(settings)}


async def check_connection(settings: Settings, timeout: float = PREFLIGHT_TIMEOUT) -> None:
    """Connect, log in and ask for metadata once, so a misconfiguration fails fast and clearly.

    aiokafka's clients only log why a connection failed and then retry, so a wrong password or
    an untrusted certificate looks like a broker that is down. Here each cause has its error:
    `AuthenticationFailed` and `CertificateNotTrusted` at once (retrying cannot help),
    `BrokerUnreachable` when no broker answered within `timeout` seconds.
    """
    options = security_options(settings)
    hosts = [h.strip() for h in settings.bootstrap_servers.split(",") if h.strip()]
    deadline = time.monotonic() + timeout
    last = "no attempt made"
    while True:
        for host in hosts:
            address, _, port = host.rpartition(":")
            try:
                await _ask_metadata(address, int(port), options, deadline)
                return
            except SaslAuthenticationFailed as e:
                raise AuthenticationFailed(
                    f"authentication failed at {host} for user {settings.sasl_username!r} with "
                    f"{settings.sasl_mechanism}: check SAGA_SASL_USERNAME and SAGA_SASL_PASSWORD "
                    f"(broker said: {e})"
                ) from None
            except UnsupportedSaslMechanismError:
                raise AuthenticationFailed(
                    f"the broker at {host} does not accept SASL mechanism "
                    f"{settings.sasl_mechanism}: check SAGA_SASL_MECHANISM"
                ) from None
            except ssl.SSLCertVerificationError as e:
                where = settings.ssl_cafile or "the system's CA store"
                raise CertificateNotTrusted(
                    f"certificate of the broker at {host} not trusted: {e.verify_message}; "
                    f"is SAGA_SSL_CAFILE ({where}) the CA that signed it?"
                ) from None
            except (TimeoutError, OSError, KafkaError) as e:
                last = f"{host}: {_describe(e, settings)}"
        if time.monotonic() >= deadline:
            raise BrokerUnreachable(
                f"no Kafka broker answered within {timeout:.0f} s "
                f"(SAGA_BOOTSTRAP_SERVERS={settings.bootstrap_servers}); last error: {last}"
            )
        await asyncio.sleep(0.5)  # a broker that is still starting refuses connections


async def _ask_metadata(host: str, port: int, options: dict[str, Any], deadline: float) -> None:
    remaining = max(deadline - time.monotonic(), 1.0)
    conn = await asyncio.wait_for(
        create_conn(host, port, request_timeout_ms=int(remaining * 1000), **options), remaining
    )
    try:
        await asyncio.wait_for(conn.send(MetadataRequest([])), remaining)
    finally:
        conn.close()


def _describe(error: BaseException, settings: Settings) -> str:
    if isinstance(error, TimeoutError):
        return f"no answer (is SAGA_SECURITY_PROTOCOL={settings.security_protocol} right?)"
    if isinstance(error, KafkaError) and "closed" in str(error):
        return (
            f"the broker closed the connection (does it expect "
            f"SAGA_SECURITY_PROTOCOL={settings.security_protocol}?)"
        )
    return f"{type(error).__name__}: {error}"
