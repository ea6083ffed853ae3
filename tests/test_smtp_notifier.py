"""The SMTP notifier against the local sink: STARTTLS and implicit TLS with the certificate
verified (a private CA named in ``ca_file``), AUTH only over TLS, and every failure placed
on the right side of "the server took the data": not sent (retry or give up) or unknown."""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from connectors.errors import AuthError, ConfigError, Retriable, Skippable, Unavailable
from connectors.notifier import Message, SendUnknown
from connectors.smtpmail import SmtpConfig, SmtpNotifierFactory
from connectors.smtpmail.client import SmtpNotifier
from tests.smtpsink import SmtpSink

TO = "buyer@example.net"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A throw-away certificate for 127.0.0.1 (its own CA): (cert file, key file)."""
    folder = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sink.test")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / "sink.pem", folder / "sink.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def server_tls(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*map(str, certificate))
    return context


def notifier(port: int, security: str = "none", *, ca_file: Path | None = None,
             login: tuple[str, str] | None = None) -> SmtpNotifier:
    config = SmtpConfig.model_validate({
        "host": "127.0.0.1", "port": port, "security": security,
        "from_address": "robot@shop.example", "timeout_seconds": 5,
        **({"ca_file": str(ca_file)} if ca_file else {}),
        **({"username": login[0], "password": login[1]} if login else {})})
    made = SmtpNotifierFactory().create(config, "mem")
    assert isinstance(made, SmtpNotifier)
    return made


def message(key: str = "n1.o1") -> Message:
    return Message(key=key, to=TO, language="zh", subject="订单 T1 已发货",
                   text="请打开 https://robot.example.com/p/x 领取\n.leading dot line\n")


@pytest.mark.parametrize("security", ["starttls", "ssl"])
def test_tls_with_verified_certificate_and_login(certificate: tuple[Path, Path],
                                                 security: str) -> None:
    """STARTTLS and implicit TLS: the certificate is verified against ca_file, the login
    goes over TLS, the message arrives once with its stable Message-ID and its text intact
    (a line starting with a dot included)."""
    with SmtpSink() as sink:
        sink.tls, sink.implicit_tls = server_tls(certificate), security == "ssl"
        sink.login = ("robot", "pw-1")
        sent = asyncio.run(notifier(sink.port, security, ca_file=certificate[0],
                                    login=("robot", "pw-1")).send(message()))
        assert sink.encrypted == [True]
        (mail,) = sink.messages
        assert mail["Message-ID"] == sent.reference == "<n1.o1@shop.example>"
        assert mail["Subject"] == "订单 T1 已发货"
        assert ".leading dot line" in mail.get_content()


def test_untrusted_certificate_or_wrong_login_sends_nothing(
        certificate: tuple[Path, Path]) -> None:
    """A certificate the system does not trust is a ConfigError, a refused login an
    AuthError: both before anything was sent."""
    with SmtpSink() as sink:
        sink.tls = server_tls(certificate)
        sink.login = ("robot", "pw-1")
        with pytest.raises(ConfigError, match="not trusted"):
            asyncio.run(notifier(sink.port, "starttls").send(message()))
        with pytest.raises(AuthError):
            asyncio.run(notifier(sink.port, "starttls", ca_file=certificate[0],
                                 login=("robot", "wrong")).send(message()))
        assert sink.messages == []


def test_each_failure_is_not_sent_or_unknown() -> None:
    """451 at RCPT: Retriable; 550: Skippable (the address is not kept in the error);
    connection refused: Unavailable; the connection lost after the data: SendUnknown."""
    with SmtpSink() as sink:
        sink.tempfail_rcpt, sink.reject_rcpt = 1, 1
        with pytest.raises(Retriable):
            asyncio.run(notifier(sink.port).send(message()))
        with pytest.raises(Skippable) as refused:
            asyncio.run(notifier(sink.port).send(message()))
        assert TO not in refused.value.message and "550" in refused.value.message
        assert sink.messages == []
        sink.drop_after_data = 1
        with pytest.raises(SendUnknown):
            asyncio.run(notifier(sink.port).send(message()))
        assert len(sink.messages) == 1
        port = sink.port
    with pytest.raises(Unavailable):
        asyncio.run(notifier(port).send(message()))


def test_config_refuses_a_password_in_clear() -> None:
    """A password over plain SMTP to another machine is refused; to a local relay it is
    allowed; username and password go together."""
    base = {"host": "smtp.example.com", "from_address": "robot@shop.example"}
    with pytest.raises(ValueError, match="in clear"):
        SmtpConfig.model_validate({**base, "security": "none", "username": "u",
                                   "password": "p"})
    SmtpConfig.model_validate({**base, "host": "localhost", "security": "none",
                               "username": "u", "password": "p"})
    with pytest.raises(ValueError, match="go together"):
        SmtpConfig.model_validate({**base, "username": "u"})
