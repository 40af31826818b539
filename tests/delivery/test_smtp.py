"""The ``smtp`` backend against a real aiosmtpd server: pool, RSET, retries, TLS, SMTPUTF8."""

from __future__ import annotations

import email.policy
import re
import ssl
from collections.abc import Iterator
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from kit.smtp import UNSUBSCRIBE, Mailbox, free_port, make_certificates, make_message, serve

from engine.errors import ConfigError
from engine.types import SendStatus
from plugins.delivery.ratelimit import RateLimit
from plugins.delivery.smtp import SMTPBackend, is_hard_bounce
from plugins.delivery.smtp_connection import DATA, RCPT, Refusal


def parse(data: bytes) -> EmailMessage:
    parsed = BytesParser(policy=email.policy.default).parsebytes(data)
    assert isinstance(parsed, EmailMessage)
    return parsed


class Waits(list[float]):
    """Stands in for ``time.sleep``: records each wait instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def backend(port: int, **options: Any) -> SMTPBackend:
    made = SMTPBackend(None, port=port, timeout=5, **options)
    made.sleep = Waits()  # type: ignore[method-assign]
    return made


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    handler = Mailbox(
        refuse={
            "nobody@example.org": "550 5.1.1 no such user",
            "busy@example.org": "451 4.3.0 try again later",
            "policy@example.org": "550 5.7.1 relaying denied",
        }
    )
    with serve(handler) as port:
        yield handler, port


# --- Done when 4: one test each ---------------------------------------------------------


@pytest.mark.parametrize("pool_size", [1, 3])
def test_the_pool_reuses_its_connections_across_batches(
    mailbox: tuple[Mailbox, int], pool_size: int
) -> None:
    handler, port = mailbox
    with backend(port, pool_size=pool_size) as smtp:
        first = smtp.send([make_message(i, to=f"user{i}@example.org") for i in range(12)])
        second = smtp.send([make_message(i, to=f"user{i}@example.org") for i in range(12, 20)])
    assert [r.status for r in first + second] == [SendStatus.SENT] * 20
    assert [r.send_id for r in first] == list(range(12))  # results in message order
    assert len(handler.received) == 20
    # 20 messages over at most pool_size connections, opened once and kept for batch two.
    assert smtp.connections_opened == handler.ehlos <= pool_size
    assert len({peer for peer, _ in handler.received}) <= pool_size
    envelope = next(env for _, env in handler.received if env.rcpt_tos == ["user1@example.org"])
    assert envelope.mail_from == "alerts@example.org"
    assert isinstance(envelope.content, bytes)
    parsed = parse(envelope.content)
    assert str(parsed["List-Unsubscribe"]).strip() == UNSUBSCRIBE
    assert parsed["Message-ID"] == "<1.run7@tailormail.example>"


def test_a_refused_recipient_is_followed_by_rset(mailbox: tuple[Mailbox, int]) -> None:
    handler, port = mailbox
    with backend(port, pool_size=1) as smtp:
        results = smtp.send(
            [make_message(1, to="nobody@example.org"), make_message(2, to="ann@example.org")]
        )
    assert [r.status for r in results] == [SendStatus.PERMANENT_FAILURE, SendStatus.SENT]
    assert results[0].error == "550 5.1.1 no such user"
    assert handler.resets == 1  # the refused transaction was reset, not left half open
    assert smtp.connections_opened == 1  # ...and the connection kept for the next message
    [(_, envelope)] = handler.received
    assert envelope.rcpt_tos == ["ann@example.org"]  # nothing of the refused one leaked


def test_a_421_is_retried_with_backoff_then_delivered() -> None:
    handler = Mailbox(refuse_once={"ann@example.org": "421 4.7.0 too busy, closing"})
    with serve(handler) as port, backend(port, pool_size=1, backoff=2.0) as smtp:
        [result] = smtp.send([make_message(1)])
    assert result.status is SendStatus.SENT
    assert handler.rcpt_attempts == ["ann@example.org", "ann@example.org"]
    assert len(handler.received) == 1
    assert smtp.connections_opened == 2  # 421 means the server closes: we reconnected
    [wait] = smtp.sleep  # type: ignore[misc]
    assert 1.0 <= wait <= 2.0  # jittered within [50%, 100%] of the first backoff


def test_a_550_is_permanent_and_suppresses_the_address(sqlite_project: Any) -> None:
    from sqlmodel import select

    from engine.db import session_scope
    from engine.models import LedgerRow, SuppressionRow
    from engine.sending.real_run import run_campaign

    handler = Mailbox(refuse={"user1@example.com": "550 5.1.1 <user1@example.com>: no such user"})
    with serve(handler) as port:
        engine = sqlite_project.engine(
            backend="smtp", delivery={"smtp": {"port": port, "timeout": 5, "retries": 0}}
        )
        sqlite_project.seed(engine, people=3)
        first = run_campaign(engine, "alerts")
        second = run_campaign(engine, "alerts")
    assert (first.sent, first.failed) == (2, 1)
    with session_scope(engine.db) as session:
        rows = session.scalars(select(LedgerRow).order_by(LedgerRow.id)).all()
        suppression = session.get(SuppressionRow, "user1@example.com")
    refused = [r for r in rows if r.run_id == first.run_id and r.email == "user1@example.com"]
    assert [(r.status, r.error) for r in refused] == [
        ("failed", "550 5.1.1 <user1@example.com>: no such user")
    ]
    assert suppression is not None and suppression.reason == "hard_bounce"
    assert (second.sent, second.skipped) == (2, 1)
    retried = [r for r in rows if r.run_id == second.run_id and r.email == "user1@example.com"]
    assert [r.skip_reason for r in retried] == ["suppressed (hard_bounce)"]
    assert handler.rcpt_attempts.count("user1@example.com") == 1


@pytest.mark.parametrize("mode", ["starttls", "ssl"])
def test_a_tls_session_with_a_test_certificate(tmp_path: Path, mode: str) -> None:
    ca_file, server_context = make_certificates(tmp_path)
    handler = Mailbox()
    server = (
        {"tls_context": server_context, "require_starttls": True}
        if mode == "starttls"
        else {"ssl_context": server_context}
    )
    with serve(handler, **server) as port:
        with backend(port, **{mode: True, "ca_file": str(ca_file)}) as smtp:
            [result] = smtp.send([make_message(1)])
        # The same server, but a client that does not trust the test CA: no session.
        with backend(port, **{mode: True}) as untrusting:
            [refused] = untrusting.send([make_message(2)])
    assert result.status is SendStatus.SENT
    assert handler.tls_sessions == 1 and len(handler.received) == 1
    assert refused.status is SendStatus.TEMPORARY_FAILURE
    assert "CERTIFICATE_VERIFY_FAILED" in (refused.error or "")


# --- more behaviour -----------------------------------------------------------------------


def test_4xx_retries_run_out_into_a_temporary_failure(mailbox: tuple[Mailbox, int]) -> None:
    handler, port = mailbox
    with backend(port, pool_size=1, retries=2, backoff=1.0, backoff_max=1.5) as smtp:
        [result] = smtp.send([make_message(1, to="busy@example.org")])
    assert result.status is SendStatus.TEMPORARY_FAILURE
    assert result.error == "451 4.3.0 try again later" and not result.rejected
    assert handler.rcpt_attempts == ["busy@example.org"] * 3
    first, second = smtp.sleep  # type: ignore[misc]
    assert 0.5 <= first <= 1.0 and 0.75 <= second <= 1.5  # doubled, capped by backoff_max


def test_only_address_refusals_count_as_hard_bounces(mailbox: tuple[Mailbox, int]) -> None:
    _, port = mailbox
    with backend(port, pool_size=1) as smtp:
        unknown, policy = smtp.send(
            [make_message(1, to="nobody@example.org"), make_message(2, to="policy@example.org")]
        )
    assert (unknown.status, unknown.rejected) == (SendStatus.PERMANENT_FAILURE, True)
    assert (policy.status, policy.rejected) == (SendStatus.PERMANENT_FAILURE, False)
    assert is_hard_bounce(Refusal(550, "mailbox unavailable", RCPT))
    assert not is_hard_bounce(Refusal(552, "5.2.2 mailbox full", RCPT))
    assert not is_hard_bounce(Refusal(554, "5.6.0 message refused", DATA))


def test_non_ascii_addresses_use_smtputf8_where_the_server_offers_it() -> None:
    handler = Mailbox()
    with serve(handler) as port, backend(port, pool_size=1) as smtp:
        results = smtp.send(
            [make_message(1, to="Zoë <zoë@example.org>"), make_message(2, to="bob@bücher.example")]
        )
    assert [r.status for r in results] == [SendStatus.SENT] * 2
    first, second = (envelope for _, envelope in handler.received)
    assert first.rcpt_tos == ["zoë@example.org"] and "SMTPUTF8" in first.mail_options
    assert "<zoë@example.org>".encode() in (first.original_content or b"")  # raw UTF-8 header
    # An internationalized domain alone needs no SMTPUTF8: it travels in IDNA form.
    assert second.rcpt_tos == ["bob@xn--bcher-kva.example"]
    assert "SMTPUTF8" not in second.mail_options


def test_a_non_ascii_mailbox_without_smtputf8_fails_naming_it() -> None:
    handler = Mailbox(smtputf8=False)
    with serve(handler) as port, backend(port, pool_size=1) as smtp:
        [result] = smtp.send([make_message(1, to="zoë@example.org")])
    assert result.status is SendStatus.PERMANENT_FAILURE and not result.rejected
    assert "SMTPUTF8" in (result.error or "") and "zoë@example.org" in (result.error or "")
    assert handler.received == []


def test_the_rate_limit_spaces_messages_out() -> None:
    now = [0.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    limit = RateLimit(4.0, burst=2, clock=lambda: now[0], sleep=sleep)
    for _ in range(6):
        limit.acquire()
    # Two at once (the burst), then one every quarter second.
    assert waits == [0.25, 0.25, 0.25, 0.25]


def test_the_rate_limit_option_reaches_every_message(mailbox: tuple[Mailbox, int]) -> None:
    handler, port = mailbox
    with backend(port, pool_size=2, rate_limit=1000.0) as smtp:
        assert smtp.rate is not None and smtp.rate.rate == 1000.0
        results = smtp.send([make_message(i) for i in range(4)])
    assert [r.status for r in results] == [SendStatus.SENT] * 4


def test_a_drop_after_data_is_unknown_and_never_retried() -> None:
    class DropAfterData(Mailbox):
        async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
            self.received.append((session.peer, envelope))
            server.transport.abort()
            return "250 never seen"

    handler = DropAfterData()
    with serve(handler) as port, backend(port, pool_size=1) as smtp:
        results = smtp.send([make_message(1), make_message(2)])
    # Both bodies reached the server (over two connections), neither was acknowledged.
    assert [r.status for r in results] == [SendStatus.UNKNOWN] * 2
    assert len({peer for peer, _ in handler.received}) == 2
    assert smtp.sleep == []


def test_a_drop_before_data_is_retried_on_a_new_connection() -> None:
    class DropFirstRcpt(Mailbox):
        async def handle_RCPT(
            self, server: Any, session: Session, envelope: Envelope, address: str, options: Any
        ) -> str:
            if not self.rcpt_attempts:
                self.rcpt_attempts.append(address)
                server.transport.abort()
                return "250 never seen"
            return await super().handle_RCPT(server, session, envelope, address, options)

    handler = DropFirstRcpt()
    with serve(handler) as port, backend(port, pool_size=1) as smtp:
        [result] = smtp.send([make_message(1)])
    assert result.status is SendStatus.SENT and smtp.connections_opened == 2


def test_an_unreachable_server_fails_the_batch_fast_and_temporarily() -> None:
    with backend(free_port(), pool_size=2) as smtp:
        results = smtp.send([make_message(1), make_message(2), make_message(3)])
    assert [r.status for r in results] == [SendStatus.TEMPORARY_FAILURE] * 3
    assert all("cannot connect" in (r.error or "") for r in results)
    assert smtp.sleep == []


def test_outside_a_with_block_the_pool_is_opened_for_the_batch(
    mailbox: tuple[Mailbox, int],
) -> None:
    handler, port = mailbox
    smtp = backend(port, pool_size=2)
    results = smtp.send([make_message(1), make_message(2)])
    assert [r.status for r in results] == [SendStatus.SENT] * 2
    assert all(connection.smtp is None for connection in smtp.pool)
    assert len(handler.received) == 2


def test_logs_in_with_the_password_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAILORMAIL_TEST_SMTP_PW", "s3cret")
    logins: list[tuple[bytes, bytes]] = []

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        assert isinstance(data, LoginPassword)
        logins.append((data.login, data.password))
        return AuthResult(success=data.password == b"s3cret")

    handler = Mailbox()
    with serve(handler, authenticator=authenticator, auth_require_tls=False) as port:
        options = {"username": "alerts", "password_env": "TAILORMAIL_TEST_SMTP_PW"}
        with backend(port, **options) as smtp:
            [result] = smtp.send([make_message(1)])
    assert result.status is SendStatus.SENT
    assert logins == [(b"alerts", b"s3cret")]


def test_header_injection_is_refused_before_connecting() -> None:
    smtp = backend(free_port())
    [result] = smtp.send([make_message(1, subject="x\nBcc: v@example.org")])
    assert result.status is SendStatus.PERMANENT_FAILURE
    assert "Subject" in (result.error or "")


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"pool_size": 0}, "delivery.smtp.pool_size: Input should be greater than or equal to 1"),
        ({"port": "smtp"}, "delivery.smtp.port: Input should be a valid integer"),
        ({"rate_limit": -1}, "delivery.smtp.rate_limit: Input should be greater than 0"),
        ({"starttls": True, "ssl": True}, "'starttls' and 'ssl' are mutually exclusive"),
        ({"username": "u"}, "'username' and 'password_env' go together"),
        ({"dkim": {"domain": "x.org"}}, "delivery.smtp.dkim.selector: Field required"),
        ({"ca_file": "/nonexistent/ca.pem"}, "delivery.smtp.ca_file: cannot load"),
    ],
)
def test_a_bad_option_is_a_start_up_error_naming_it(options: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError) as info:
        SMTPBackend(None, **options)
    assert named in str(info.value)


def test_the_pool_verifies_certificates_by_default() -> None:
    smtp = SMTPBackend(None)
    assert smtp.endpoint.context.verify_mode is ssl.CERT_REQUIRED
    assert smtp.endpoint.context.check_hostname


def test_dkim_signs_the_list_unsubscribe_headers(tmp_path: Path) -> None:
    import base64

    import dkim
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    (tmp_path / "dkim.pem").write_bytes(pem)
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)

    def dns(name: bytes, timeout: int = 5) -> bytes | None:
        return record if name == b"mail2026._domainkey.example.org." else None

    handler = Mailbox()
    key_file = str(tmp_path / "dkim.pem")
    signing = {"domain": "example.org", "selector": "mail2026", "private_key_file": key_file}
    with serve(handler) as port:
        smtp = SMTPBackend(
            None,
            port=port,
            pool_size=1,
            dkim=signing,
        )
        with smtp:
            [result] = smtp.send([make_message(1)])
    assert result.status is SendStatus.SENT
    [(_, envelope)] = handler.received
    data = envelope.original_content or b""
    assert dkim.verify(data, dnsfunc=dns)
    signature = parse(data)["DKIM-Signature"]
    names = re.search(r"\bh=([^;]+)", str(signature))
    assert names is not None
    signed = {name.strip().lower() for name in names.group(1).split(":")}
    assert {"from", "subject", "list-unsubscribe", "list-unsubscribe-post"} <= signed
    # Changing the unsubscribe target breaks the signature.
    forged = data.replace(b"https://t.example/u/tok123", b"https://t.example/u/evil00")
    assert forged != data and not dkim.verify(forged, dnsfunc=dns)


def test_a_missing_dkim_key_is_a_start_up_error(tmp_path: Path) -> None:
    signing = {"domain": "example.org", "selector": "s", "private_key_file": "nope.pem"}
    with pytest.raises(ConfigError, match=r"delivery\.smtp\.dkim\.private_key_file: cannot read"):
        SMTPBackend(None, dkim=signing)


def test_a_busy_greeting_is_retried_and_a_refused_login_defers_the_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from plugins.delivery.smtp_connection import CONNECT

    smtp = backend(free_port(), pool_size=1, retries=2)
    answers = [Refusal(421, "4.3.2 busy, try later", CONNECT), None]
    monkeypatch.setattr(smtp.pool[0], "connect", lambda: answers.pop(0) if answers else None)
    monkeypatch.setattr(smtp.pool[0], "deliver", lambda *args: None)
    [result] = smtp.send([make_message(1)])
    assert result.status is SendStatus.SENT and len(smtp.sleep) == 1  # type: ignore[arg-type]

    refused = Refusal(535, "5.7.8 authentication failed", CONNECT)
    monkeypatch.setattr(smtp.pool[0], "connect", lambda: refused)
    results = smtp.send([make_message(2), make_message(3)])
    # A login refused is no verdict on the messages: deferred, not failed for good.
    assert [r.status for r in results] == [SendStatus.TEMPORARY_FAILURE] * 2
    assert all(r.error == "535 5.7.8 authentication failed" for r in results)
    assert not any(r.rejected for r in results)


def test_the_pool_sends_over_its_connections_in_parallel() -> None:
    import asyncio
    import contextlib

    class Rendezvous(Mailbox):
        """Holds each DATA until two transactions are in DATA at once (or 5 s pass)."""

        def __init__(self) -> None:
            super().__init__()
            self.inside = self.most = 0
            self.together: asyncio.Event | None = None

        async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
            self.together = self.together or asyncio.Event()
            self.inside += 1
            self.most = max(self.most, self.inside)
            if self.inside >= 2:
                self.together.set()
            with contextlib.suppress(TimeoutError):  # sequential: the assertion says so
                await asyncio.wait_for(self.together.wait(), timeout=5)
            self.inside -= 1
            return await super().handle_DATA(server, session, envelope)

    handler = Rendezvous()
    with serve(handler) as port, backend(port, pool_size=4) as smtp:
        results = smtp.send([make_message(i) for i in range(8)])
    assert [r.status for r in results] == [SendStatus.SENT] * 8
    assert handler.most >= 2  # two connections were mid-transaction at the same moment
