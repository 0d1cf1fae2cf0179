"""TLS to the broker (``amqps://``) against a node of this module's own with a TLS listener.

The module makes its own CA, the node's certificate (for ``localhost`` only) and a
client certificate whose common name is the node's administrator (the EXTERNAL login).
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from infra.node import BrokerNode, NodeConfig
from infra.node_config import ADMIN_USER, TlsListener
from infra.ports import free_port
from rpc.wire import ConnectError, WireConnection
from rpc.wire.tls import TlsOptions

from ..helpers import listening_addresses

Key = rsa.RSAPrivateKey


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: Key, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return path


def _sign(
    builder: x509.CertificateBuilder, subject_key: Key, issuer_key: Key, path: Path
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        builder.public_key(subject_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(subject_key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
        .sign(issuer_key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert


def make_ca(directory: Path, name: str) -> tuple[Path, Key, x509.Name]:
    """A self-signed CA: its certificate file, key and name."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = _name(name)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    path = directory / f"{name}.pem"
    _sign(builder, key, key, path)
    return path, key, subject


def make_leaf(
    directory: Path, name: str, ca: tuple[Path, Key, x509.Name], *, server: bool
) -> tuple[Path, Path]:
    """A certificate signed by ``ca``: for the host ``localhost`` (server) or the user ``name``."""
    _, ca_key, ca_name = ca
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(ca_name)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False
        )
    cert_path = directory / f"{name}.pem"
    _sign(builder, key, ca_key, cert_path)
    return cert_path, _write_key(key, directory / f"{name}.key")


@dataclasses.dataclass(frozen=True)
class TlsBroker:
    node: BrokerNode
    config: NodeConfig
    ca_file: Path
    wrong_ca_file: Path
    client_cert: Path
    client_key: Path


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    """A node with a TLS listener whose certificate names ``localhost`` only."""
    certs = tmp_path_factory.mktemp("certs")
    ca = make_ca(certs, "test-ca")
    wrong_ca_file, _, _ = make_ca(certs, "other-ca")
    server_cert, server_key = make_leaf(certs, "localhost", ca, server=True)
    client_cert, client_key = make_leaf(certs, ADMIN_USER, ca, server=False)
    config = dataclasses.replace(
        NodeConfig.on_free_ports(tmp_path_factory.mktemp("tls-broker")),
        tls=TlsListener(free_port(), ca[0], server_cert, server_key),
    )
    node = BrokerNode(config)
    try:
        node.start()
        yield TlsBroker(node, config, ca[0], wrong_ca_file, client_cert, client_key)
    finally:
        node.stop()


async def round_trip(connection: WireConnection, body: bytes) -> bytes | None:
    """Declare a queue, publish ``body`` to it and get it back."""
    try:
        channel = await connection.raw_channel(publisher_confirms=True)
        queue = (await channel.queue_declare("", exclusive=True)).queue
        assert await channel.basic_publish(body, routing_key=queue) is True
        got = await channel.basic_get(queue, no_ack=True)
        return got.body if got is not None else None
    finally:
        await connection.close()


async def test_a_message_goes_round_trip_over_tls(tls_broker: TlsBroker):
    connection = await WireConnection.connect(
        tls_broker.config.amqps_url, name="test-tls", tls=TlsOptions(ca_file=tls_broker.ca_file)
    )

    assert await round_trip(connection, b"over tls") == b"over tls"


async def test_a_broker_signed_by_another_ca_is_refused_with_a_clear_error(
    tls_broker: TlsBroker,
):
    with pytest.raises(ConnectError) as caught:
        await WireConnection.connect(
            tls_broker.config.amqps_url,
            name="test-tls-wrong-ca",
            tls=TlsOptions(ca_file=tls_broker.wrong_ca_file),
            timeout_s=10,
        )

    assert tls_broker.config.tls is not None
    where = f"localhost:{tls_broker.config.tls.port}"
    assert str(caught.value).startswith(f"TLS handshake with {where} failed: certificate verify")


async def test_a_host_name_the_certificate_does_not_name_is_refused(tls_broker: TlsBroker):
    url = tls_broker.config.amqps_url.replace("localhost", "127.0.0.1")  # the cert names localhost

    with pytest.raises(ConnectError, match="certificate verify failed: IP address mismatch"):
        await WireConnection.connect(
            url, name="test-tls-host", tls=TlsOptions(ca_file=tls_broker.ca_file), timeout_s=10
        )


async def test_plain_amqp_to_the_same_node_still_works(tls_broker: TlsBroker):
    connection = await WireConnection.connect(tls_broker.config.amqp_url, name="test-plain")

    assert await round_trip(connection, b"in clear") == b"in clear"


async def test_a_client_certificate_logs_in_with_external(tls_broker: TlsBroker):
    # No password in the URL: the certificate's common name (the administrator) is the user.
    assert tls_broker.config.tls is not None
    url = f"amqps://localhost:{tls_broker.config.tls.port}/?auth_mechanism=external"
    tls = TlsOptions(tls_broker.ca_file, tls_broker.client_cert, tls_broker.client_key)
    connection = await WireConnection.connect(url, name="test-external", tls=tls)

    assert await round_trip(connection, b"as admin") == b"as admin"


def test_the_tls_listener_is_bound_to_loopback_only(tls_broker: TlsBroker):
    assert tls_broker.config.tls is not None
    assert listening_addresses(tls_broker.config.tls.port) == {"127.0.0.1"}


def test_an_unreadable_ca_file_is_a_configuration_error(tmp_path: Path):
    missing = tmp_path / "missing.pem"
    with pytest.raises(ValueError, match="cannot read the TLS CA file"):
        WireConnection(
            "amqps://localhost/",
            name="test-bad-ca",
            reconnect_interval_s=1,
            timeout_s=1,
            tls=TlsOptions(ca_file=missing),
        )


async def test_a_mechanism_the_broker_does_not_offer_is_refused_by_name(amqp_url: str):
    # The session's node has no rabbitmq_auth_mechanism_ssl: PLAIN and AMQPLAIN only.
    offers = r"does not offer the EXTERNAL mechanism \(it offers [A-Z, ]+\)$"
    with pytest.raises(ConnectError, match=offers):
        await WireConnection.connect(
            amqp_url + "?auth_mechanism=external", name="test-no-external", timeout_s=10
        )
