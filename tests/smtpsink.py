"""A local SMTP sink for tests (standard library only): it speaks enough RFC 5321 for
``smtplib`` (EHLO, MAIL, RCPT, DATA with dot-unstuffing, RSET, NOOP, QUIT), keeps every
message it accepted, and misbehaves on demand:

* ``tempfail_rcpt`` — the next N recipients get ``451`` (not taken: the sender retries);
* ``reject_rcpt`` — the next N recipients get ``550`` (refused for good);
* ``drop_after_data`` — the next N messages are **kept** and the connection is closed before
  the final ``250``: the sender cannot know (the duplicate problem of RFC 1047).

With ``tls`` (a server ``SSLContext``) it offers STARTTLS, or speaks TLS from the first byte
when ``implicit_tls``; with ``login`` it offers ``AUTH PLAIN`` once the session is encrypted
and takes only that user and password.

Loopback only; a test double, never a relay.
"""

from __future__ import annotations

import base64
import socketserver
import ssl
import threading
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any


@dataclass
class Sink:
    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    tempfail_rcpt: int = 0
    reject_rcpt: int = 0
    drop_after_data: int = 0
    port: int = 0  # where it listens
    tls: ssl.SSLContext | None = None
    implicit_tls: bool = False
    login: tuple[str, str] | None = None
    encrypted: list[bool] = field(default_factory=list)  # per message: was TLS on
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, name: str) -> bool:
        with self.lock:
            left = getattr(self, name)
            if left > 0:
                setattr(self, name, left - 1)
                return True
            return False

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.messages if m["To"] == address]


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def reply(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")
        self.wfile.flush()

    def _start_tls(self, tls: ssl.SSLContext) -> None:
        self.connection = tls.wrap_socket(self.connection, server_side=True)
        self.rfile = self.connection.makefile("rb")
        self.wfile = self.connection.makefile("wb")
        self.secure = True

    def _ehlo(self, sink: Sink) -> None:
        offers = ["sink.test", "8BITMIME"]
        if sink.tls is not None and not self.secure:
            offers.append("STARTTLS")
        if sink.login is not None and self.secure:
            offers.append("AUTH PLAIN")
        lines = [f"250-{o}" for o in offers[:-1]] + [f"250 {offers[-1]}"]
        self.wfile.write("".join(f"{line}\r\n" for line in lines).encode())
        self.wfile.flush()

    def _auth(self, sink: Sink, verb: str) -> None:
        parts = verb.split()
        given = base64.b64decode(parts[2]).split(b"\0") if len(parts) == 3 else []
        wanted = [b"", *(x.encode() for x in sink.login or ("", ""))]
        if not self.secure or given != wanted:
            self.reply("535 5.7.8 authentication failed")
        else:
            self.authed = True
            self.reply("235 2.7.0 authenticated")

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass  # the client is gone
        finally:
            if self.connection is not self.request:  # the TLS wrapper of the socket
                self.connection.close()

    def handle(self) -> None:
        sink = self.server.sink
        self.secure = self.authed = False
        if sink.tls is not None and sink.implicit_tls:
            try:
                self._start_tls(sink.tls)
            except (ssl.SSLError, OSError):
                return  # the client did not trust us
        self.reply("220 sink.test ESMTP")
        sender, rcpts = "", []
        while True:
            raw = self.rfile.readline()
            if not raw:
                return
            verb = raw.decode("utf-8", "replace").strip()
            upper = verb.upper()
            if upper.startswith(("EHLO", "HELO")):
                self._ehlo(sink)
            elif upper == "STARTTLS" and sink.tls is not None and not self.secure:
                self.reply("220 2.0.0 ready to start TLS")
                try:
                    self._start_tls(sink.tls)
                except (ssl.SSLError, OSError):
                    return
            elif upper.startswith("AUTH PLAIN"):
                self._auth(sink, verb)
            elif upper.startswith("MAIL FROM:") and sink.login is not None and not self.authed:
                self.reply("530 5.7.0 authentication required")
            elif upper.startswith("MAIL FROM:"):
                sender, rcpts = verb[10:].strip(" <>"), []
                self.reply("250 OK")
            elif upper.startswith("RCPT TO:"):
                if sink.take("tempfail_rcpt"):
                    self.reply("451 4.3.0 try again later")
                elif sink.take("reject_rcpt"):  # as servers do, naming the address
                    self.reply(f"550 5.1.1 {verb[8:].strip()}: Recipient address rejected")
                else:
                    rcpts.append(verb[8:].strip(" <>"))
                    self.reply("250 OK")
            elif upper == "DATA":
                if not rcpts:
                    self.reply("503 5.5.1 no recipients")
                    continue
                self.reply("354 end with <CRLF>.<CRLF>")
                if not self._data(sink, sender, rcpts):
                    return
            elif upper in ("RSET", "NOOP"):
                self.reply("250 OK")
            elif upper == "QUIT":
                self.reply("221 bye")
                return
            else:
                self.reply("502 5.5.2 not implemented")

    def _data(self, sink: Sink, sender: str, rcpts: list[str]) -> bool:
        lines = []
        while True:
            line = self.rfile.readline()
            if not line or line == b".\r\n":
                break
            lines.append(line[1:] if line.startswith(b"..") else line)
        parsed = message_from_bytes(b"".join(lines), policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        with sink.lock:
            sink.messages.append(parsed)
            sink.envelopes.append((sender, list(rcpts)))
            sink.encrypted.append(self.secure)
        if sink.take("drop_after_data"):
            return False  # kept, but the sender never hears so
        self.reply("250 2.0.0 queued")
        return True


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, sink: Sink) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.sink = sink


class SmtpSink:
    """``with SmtpSink() as sink:`` serves on ``sink.port`` until the block ends."""

    def __init__(self) -> None:
        self.state = Sink()
        self._server = _Server(self.state)
        self.port = self.state.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Sink:
        self._thread.start()
        return self.state

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()
