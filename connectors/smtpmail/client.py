"""Sending one buyer e-mail over SMTP (RFC 5321), with what each failure means.

The conversation is driven step by step (``EHLO``, ``STARTTLS``, ``AUTH``, ``MAIL``,
``RCPT``, ``DATA``) so that every failure can be placed on one side of the line that
matters: before the server took the message's data (definitely not sent: retry or give up)
or after (``SendUnknown``: the message may be delivered). SMTP has no idempotency: a
message whose final ``250`` was lost and is sent again arrives twice (RFC 1047). What we do
about it: the event's ``Message-ID`` is stable, so a mail client or provider that folds
duplicates by Message-ID shows one copy, and the core never sends an unknown event again by
itself.

Blocking I/O (``smtplib``) runs in a worker thread, never on the event loop. This module
never logs the address, the text or the credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import smtplib
import ssl
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import format_datetime, formataddr
from typing import ClassVar

from connectors.errors import AuthError, ConfigError, Retriable, Skippable, Unavailable
from connectors.notifier import Channel, Message, SendUnknown, Sent, short_error

#: How the connection is secured: ``starttls`` (submission, 587), ``ssl`` (implicit TLS,
#: 465) or ``none`` (a local relay on 25, e.g. the machine's own MTA).
DEFAULT_PORTS = {"starttls": 587, "ssl": 465, "none": 25}
_LEADING_DOT = re.compile(rb"(?m)^\.")
_ADDRESS = re.compile(r"<?[^\s<>@]+@[^\s<>@]+>?")


def build(message: Message, *, sender: str, sender_name: str | None, now: datetime) -> bytes:
    """The message as it goes on the wire (CRLF lines), with a Message-ID stable per event."""
    mail = EmailMessage(policy=SMTP_POLICY)
    mail["From"] = formataddr((sender_name, sender)) if sender_name else sender
    mail["To"] = message.to
    mail["Subject"] = message.subject
    mail["Date"] = format_datetime(now.astimezone(UTC))
    mail["Message-ID"] = message_id(message.key, sender)
    mail["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to us
    mail.set_content(message.text, charset="utf-8")
    return mail.as_bytes()


def message_id(key: str, sender: str) -> str:
    """``<key@sender's domain>``: the same for every send of one event."""
    domain = sender.rpartition("@")[2] or "robot.invalid"
    return f"<{key}@{domain}>"


class SmtpNotifier:
    """E-mail through one SMTP server (see the module)."""

    channel: ClassVar[Channel] = Channel.EMAIL

    def __init__(self, *, host: str, port: int | None, security: str, username: str | None,
                 password: str | None, sender: str, sender_name: str | None,
                 timeout: float, ca_file: str | None = None) -> None:
        self.host = host
        self.port = port or DEFAULT_PORTS[security]
        self.security = security
        self._username = username
        self._password = password
        self.sender = sender
        self.sender_name = sender_name
        self.timeout = timeout
        self.ca_file = ca_file  # None: the system's trust store

    async def send(self, message: Message) -> Sent:
        data = build(message, sender=self.sender, sender_name=self.sender_name,
                     now=datetime.now(UTC))
        await asyncio.to_thread(self._send_blocking, message.to, data)
        return Sent(message_id(message.key, self.sender))

    async def aclose(self) -> None:
        """Nothing is kept open between messages."""

    # -- the conversation (blocking; a worker thread) --------------------------------------

    def _tls(self) -> ssl.SSLContext:
        """Certificate and host name verified, always (against ``ca_file`` when given)."""
        return ssl.create_default_context(cafile=self.ca_file)

    def _connect(self) -> smtplib.SMTP:
        try:
            conn = (smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout,
                                     context=self._tls()) if self.security == "ssl"
                    else smtplib.SMTP(self.host, self.port, timeout=self.timeout))
        except ssl.SSLCertVerificationError as exc:
            raise ConfigError(f"smtp {self.host}: its certificate is not trusted "
                              f"({exc.verify_message}); fix it, or name its CA in ca_file"
                              ) from exc
        except (OSError, smtplib.SMTPException) as exc:
            raise Unavailable(f"smtp {self.host}:{self.port}: cannot connect "
                              f"({type(exc).__name__})") from exc
        try:
            conn.ehlo()
            if self.security == "starttls":
                if not conn.has_extn("starttls"):
                    raise ConfigError(f"smtp {self.host}:{self.port} offers no STARTTLS; "
                                      "use security: ssl, or none for a local relay")
                conn.starttls(context=self._tls())
                conn.ehlo()
            if self._username is not None and self._password is not None:
                conn.login(self._username, self._password)
        except smtplib.SMTPAuthenticationError as exc:
            _close(conn)
            raise AuthError(f"smtp {self.host}: login refused ({exc.smtp_code})") from exc
        except ssl.SSLCertVerificationError as exc:
            _close(conn)
            raise ConfigError(f"smtp {self.host}: its certificate is not trusted "
                              f"({exc.verify_message}); fix it, or name its CA in ca_file"
                              ) from exc
        except (OSError, smtplib.SMTPException) as exc:
            _close(conn)
            raise Unavailable(f"smtp {self.host}: {type(exc).__name__} before sending") from exc
        except ConfigError:
            _close(conn)
            raise
        return conn

    def _send_blocking(self, to: str, data: bytes) -> None:
        conn = self._connect()
        try:
            _envelope(conn, self.sender, to)
            _data(conn, data)
        finally:
            _close(conn)


def _refused(step: str, code: int, reply: bytes, *, permanent: type[Exception]) -> Exception:
    # Servers echo the address ("<x@y>: Recipient address rejected"): it is not kept.
    said = _ADDRESS.sub("<address>", reply.decode("utf-8", "replace"))
    text = short_error(f"smtp {step} refused: {code} {said}")
    return permanent(text) if 500 <= code < 600 else Retriable(text)


def _envelope(conn: smtplib.SMTP, sender: str, to: str) -> None:
    """MAIL FROM and RCPT TO; nothing is sent if either fails."""
    try:
        code, reply = conn.mail(sender)
        if code != 250:
            # Our own sender refused: the configuration, not this buyer, is wrong.
            raise _refused("MAIL FROM", code, reply, permanent=ConfigError)
        code, reply = conn.rcpt(to)
        if code not in (250, 251):
            raise _refused("RCPT TO", code, reply, permanent=Skippable)
    except (OSError, smtplib.SMTPServerDisconnected) as exc:
        raise Unavailable(f"smtp: {type(exc).__name__} before the message was sent") from exc


def _data(conn: smtplib.SMTP, data: bytes) -> None:
    """DATA: refused before the text went (not sent) or lost after it (may be sent)."""
    try:
        conn.putcmd("data")
        code, reply = conn.getreply()
    except (OSError, smtplib.SMTPServerDisconnected) as exc:
        raise Unavailable(f"smtp: {type(exc).__name__} before the message was sent") from exc
    if code != 354:
        raise _refused("DATA", code, reply, permanent=Skippable)
    body = _LEADING_DOT.sub(b"..", data)
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    try:
        conn.send(body + b".\r\n")
        code, reply = conn.getreply()
    except (OSError, smtplib.SMTPServerDisconnected) as exc:
        # The text is with the server: it may be delivered although we never heard so.
        raise SendUnknown(f"smtp: {type(exc).__name__} after the message's data was sent; "
                          "it may have been delivered") from exc
    if code != 250:
        # A final refusal of the data is definite: the server did not take the message.
        raise _refused("message", code, reply, permanent=Skippable)


def _close(conn: smtplib.SMTP) -> None:
    try:
        conn.quit()
    except (OSError, smtplib.SMTPException):
        with contextlib.suppress(OSError):
            conn.close()


__all__ = ["DEFAULT_PORTS", "SmtpNotifier", "build", "message_id"]
