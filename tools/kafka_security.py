"""The secure side of a local broker: a private CA, a broker certificate and SCRAM users.

``LocalKafka(secure=True)`` (``local_kafka.py up --secure``) serves clients on one SASL_SSL
listener: TLS with a certificate signed by a CA made here (valid for ``127.0.0.1`` and
``localhost``), and SCRAM-SHA-512 / SCRAM-SHA-256 logins for two users created when the log dirs
are formatted (``kafka-storage format --add-scram``, KRaft has no ZooKeeper to add them later):

* ``saga``  — the user for clients (workers, participants, the demo, tests);
* ``admin`` — the broker's own login; brokers talk to each other over the same SASL_SSL listener.

There is no authorizer, so every authenticated user may do everything (no ACLs to set up). The
controller listener stays plaintext on loopback: only the nodes themselves use it.

Everything is made with the JDK's ``keytool`` (no extra Python package) into ``<node dir>/../tls``
and the passwords into ``secure.json`` (mode 0600) in the state dir, once per ``up``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

MECHANISM = "SCRAM-SHA-512"
"""The mechanism clients are told to use; SCRAM-SHA-256 works as well."""
CLIENT_USER = "saga"
BROKER_USER = "admin"
LISTENER = "SASL_SSL"
VALID_DAYS = 3650


class SecurityToolError(RuntimeError):
    """Making the CA, the certificates or the keystore failed."""


@dataclass(frozen=True)
class SecureSetup:
    """Where the TLS files are and which logins exist; saved as ``secure.json``."""

    cafile: str
    """PEM file of the CA that signed the broker certificate: the clients' trust anchor."""
    keystore: str
    """PKCS12 keystore with the broker's key and certificate chain."""
    keystore_password: str
    username: str
    password: str
    broker_password: str
    mechanism: str = MECHANISM

    def __repr__(self) -> str:  # the passwords stay out of logs and tracebacks
        return f"SecureSetup(cafile={self.cafile!r}, username={self.username!r})"

    @classmethod
    def load(cls, state_dir: Path) -> SecureSetup | None:
        try:
            return cls(**json.loads((state_dir / "secure.json").read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def save(self, state_dir: Path) -> None:
        path = state_dir / "secure.json"
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(asdict(self), out, indent=2)

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for an aiokafka client (producer, consumer, admin)."""
        from aiokafka.helpers import create_ssl_context

        return {
            "security_protocol": LISTENER,
            "sasl_mechanism": self.mechanism,
            "sasl_plain_username": self.username,
            "sasl_plain_password": self.password,
            "ssl_context": create_ssl_context(cafile=self.cafile),
        }

    def client_env(self) -> dict[str, str]:
        """The ``SAGA_*`` variables a saga process needs for this broker."""
        return {
            "SAGA_SECURITY_PROTOCOL": LISTENER,
            "SAGA_SASL_MECHANISM": self.mechanism,
            "SAGA_SASL_USERNAME": self.username,
            "SAGA_SASL_PASSWORD": self.password,
            "SAGA_SSL_CAFILE": self.cafile,
        }

    def scram_arguments(self) -> list[str]:
        """``kafka-storage format`` arguments that create both users with both mechanisms."""
        args = []
        for name, password in ((BROKER_USER, self.broker_password), (self.username, self.password)):
            for mechanism in ("SCRAM-SHA-512", "SCRAM-SHA-256"):
                args += ["--add-scram", f"{mechanism}=[name={name},password={password}]"]
        return args

    def server_properties(self) -> dict[str, object]:
        """What a node's server.properties needs besides its listener addresses."""
        jaas = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{BROKER_USER}" password="{self.broker_password}";'
        )
        prefix = f"listener.name.{LISTENER.lower()}"
        return {
            "sasl.enabled.mechanisms": "SCRAM-SHA-512,SCRAM-SHA-256",
            "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
            f"{prefix}.scram-sha-512.sasl.jaas.config": jaas,
            f"{prefix}.scram-sha-256.sasl.jaas.config": jaas,
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.location": self.keystore,
            "ssl.keystore.password": self.keystore_password,
            # The brokers are clients of each other: they trust the same CA.
            "ssl.truststore.type": "PKCS12",
            "ssl.truststore.location": self.keystore,
            "ssl.truststore.password": self.keystore_password,
        }


def make_ca(tls_dir: Path, name: str = "kafka-saga local CA") -> tuple[Path, Path, str]:
    """A self-signed CA: (its PKCS12 keystore, its PEM certificate, the keystore password)."""
    tls_dir.mkdir(parents=True, exist_ok=True)
    store, pem, password = tls_dir / "ca.p12", tls_dir / "ca.pem", secrets.token_hex(16)
    for old in (store, pem):
        old.unlink(missing_ok=True)
    _keytool(
        "-genkeypair", "-alias", "ca", "-keyalg", "RSA", "-keysize", "2048",
        "-dname", f"CN={name}", "-ext", "bc:c", "-validity", str(VALID_DAYS),
        "-keystore", store, "-storetype", "PKCS12", "-storepass", password,
    )  # fmt: skip
    _keytool("-exportcert", "-rfc", "-alias", "ca", "-keystore", store, "-storepass", password,
             "-file", pem)  # fmt: skip
    return store, pem, password


def create(tls_dir: Path) -> SecureSetup:
    """A fresh CA, a broker keystore signed by it, and random passwords for both users."""
    ca_store, ca_pem, ca_password = make_ca(tls_dir)
    keystore, password = tls_dir / "broker.p12", secrets.token_hex(16)
    csr, cert = tls_dir / "broker.csr", tls_dir / "broker.pem"
    for old in (keystore, csr, cert):
        old.unlink(missing_ok=True)
    common = ["-keystore", keystore, "-storetype", "PKCS12", "-storepass", password]
    _keytool(
        "-genkeypair", "-alias", "broker", "-keyalg", "RSA", "-keysize", "2048",
        "-dname", "CN=localhost", "-validity", str(VALID_DAYS), *common,
    )  # fmt: skip
    _keytool("-certreq", "-alias", "broker", "-file", csr, *common)
    _keytool(
        "-gencert", "-rfc", "-alias", "ca", "-keystore", ca_store, "-storepass", ca_password,
        "-infile", csr, "-outfile", cert, "-validity", str(VALID_DAYS),
        "-ext", "SAN=ip:127.0.0.1,dns:localhost", "-ext", "EKU=serverAuth,clientAuth",
    )  # fmt: skip
    _keytool("-importcert", "-noprompt", "-alias", "ca", "-file", ca_pem, *common)
    _keytool("-importcert", "-noprompt", "-alias", "broker", "-file", cert, *common)
    return SecureSetup(
        cafile=str(ca_pem),
        keystore=str(keystore),
        keystore_password=password,
        username=CLIENT_USER,
        password=secrets.token_urlsafe(18),
        broker_password=secrets.token_urlsafe(18),
    )


def _keytool(*args: object) -> None:
    java_home = os.environ.get("JAVA_HOME")
    keytool = str(Path(java_home) / "bin" / "keytool") if java_home else shutil.which("keytool")
    if not keytool:
        raise SecurityToolError("no `keytool` on PATH: it comes with the JDK (17+)")
    cmd = [keytool, *(str(a) for a in args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=60)
    if proc.returncode != 0:
        previous = ["", *cmd]
        shown = " ".join("***" if "pass" in previous[i] else a for i, a in enumerate(cmd))
        raise SecurityToolError(f"`{shown}` failed:\n{proc.stdout}{proc.stderr}")
