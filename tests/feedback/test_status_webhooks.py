"""Status webhooks out (``engine.feedback.status_webhooks``): each outcome becomes one
delivery per matching subscription, posted to a real server on loopback, signed per
Standard Webhooks (checked with the ``standardwebhooks`` package, an implementation that is
not ours), retried with backoff, dead-lettered after the last attempt and replayable; never
posted twice at once by two dispatchers; redirects never followed; and the outbound
boundary: URLs that are not https or whose host is not public are refused, at subscription
and again at delivery, and the connection goes to the address that was checked."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kit.project import Project
from sqlalchemy import select
from sqlalchemy.engine import Engine as SAEngine
from standardwebhooks.webhooks import Webhook

from engine.clock import SimulatedClock, use_clock
from engine.db import session_scope
from engine.errors import TailormailError
from engine.feedback.outbound import (
    RESPONSE_LIMIT,
    OutboundPolicy,
    OutboundURLError,
    check_url,
    read_some,
    resolve_host,
)
from engine.feedback.status_webhooks import (
    BACKOFF,
    add_subscription,
    dead_letters,
    dispatch_due,
    enqueue,
    forget_triggers,
    list_subscriptions,
    purge_older_than,
    remove_subscription,
    replay,
)
from engine.models import WebhookDeliveryRow

OPEN = OutboundPolicy(allow_http=True, allow_private=True)  # the receiver is on loopback
PUBLIC_IP = "93.184.215.14"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """An HTTP(S) server on 127.0.0.1 that records every POST and answers the statuses it
    is told to, in order (then 200); a 3xx answer carries a Location."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[Received] = []
        self.answers: list[int] = []
        self.delay = 0.0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                time.sleep(receiver.delay)
                with receiver.lock:
                    receiver.requests.append(Received(self.path, dict(self.headers), body))
                    status = receiver.answers.pop(0) if receiver.answers else 200
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, path: str = "/hook", host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def db(project: Project) -> Iterator[SAEngine]:
    engine = project.engine()
    yield engine.db
    engine.close()


@dataclass(frozen=True)
class Certificates:
    ca: Path
    cert: Path
    key: Path


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A test CA and a certificate it signed for ``hooks.example``."""
    folder = tmp_path_factory.mktemp("tls")
    now = datetime.now(UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tailormail test CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())

    def builder(subject: x509.Name, public: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
        )

    ca = (
        builder(ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hooks.example")])
    leaf = (
        builder(leaf_name, key.public_key())
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("hooks.example")]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    found = Certificates(folder / "ca.pem", folder / "cert.pem", folder / "key.pem")
    found.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    found.cert.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    found.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return found


def outcome(db: SAEngine, trigger_id: str = "t1", event: str = "sent", **data: object) -> int:
    """Enqueue one outcome of a trigger of ``alerts`` in a transaction of its own."""
    with session_scope(db) as session:
        return enqueue(
            session, trigger_id=trigger_id, campaign="alerts", event_type=event, data=data
        )


def deliveries(db: SAEngine) -> list[WebhookDeliveryRow]:
    with session_scope(db) as session:
        return list(session.scalars(select(WebhookDeliveryRow).order_by(WebhookDeliveryRow.id)))


def test_a_delivery_is_signed_per_standard_webhooks(db: SAEngine, receiver: Receiver) -> None:
    sub, secret = add_subscription(db, receiver.url(), policy=OPEN)
    assert secret.startswith("whsec_") and sub.id.startswith("wh_")
    assert outcome(db, variant="a", decision_id="d1", campaign="not-this-one") == 1
    summary = dispatch_due(db, policy=OPEN)
    assert (summary.delivered, summary.retrying, summary.dead) == (1, 0, 0)
    [request] = receiver.requests
    payload = Webhook(secret).verify(request.body, request.headers)  # an independent check
    assert payload["type"] == "trigger.sent"
    assert payload["data"] == {
        "trigger_id": "t1",
        "campaign": "alerts",  # data cannot replace what the trigger was
        "variant": "a",
        "decision_id": "d1",
    }
    assert datetime.fromisoformat(payload["timestamp"]).tzinfo is not None
    [row] = deliveries(db)
    assert request.headers["webhook-id"] == row.message_id and row.message_id.startswith("msg_")
    assert (row.status, row.attempts, row.last_status_code) == ("delivered", 1, 200)
    assert row.delivered_at is not None and row.lease_owner is None
    with pytest.raises(Exception, match="signature"):
        Webhook(add_subscription(db, receiver.url(), policy=OPEN)[1]).verify(
            request.body, request.headers
        )
    assert dispatch_due(db, policy=OPEN).attempted == 0  # delivered once, never again


def test_an_outcome_goes_to_each_matching_subscription_in_the_callers_transaction(
    db: SAEngine, receiver: Receiver
) -> None:
    every, _ = add_subscription(db, receiver.url("/every"), policy=OPEN)
    clicks, _ = add_subscription(db, receiver.url("/clicks"), events=["clicked"], policy=OPEN)
    other, _ = add_subscription(db, receiver.url("/other"), campaigns=["other"], policy=OPEN)
    gone, _ = add_subscription(db, receiver.url("/gone"), policy=OPEN)
    remove_subscription(db, gone.id)
    assert outcome(db, event="sent") == 1
    assert outcome(db, event="clicked") == 2
    with pytest.raises(RuntimeError), session_scope(db) as session:
        enqueue(session, trigger_id="t2", campaign="alerts", event_type="bounced", data={})
        raise RuntimeError("the outcome is not recorded: neither is its delivery")
    assert [(r.subscription_id, r.event_type) for r in deliveries(db)] == [
        (every.id, "sent"),
        (every.id, "clicked"),
        (clicks.id, "clicked"),
    ]
    assert other.campaigns == ["other"] and clicks.events == ["clicked"]
    with pytest.raises(TailormailError, match="unknown webhook event opened"):
        outcome(db, event="opened")
    assert dispatch_due(db, policy=OPEN).delivered == 3
    assert sorted(r.path for r in receiver.requests) == ["/clicks", "/every", "/every"]


def test_a_failure_is_retried_with_backoff_until_delivered(
    db: SAEngine, receiver: Receiver
) -> None:
    receiver.answers = [500, 503]
    clock = SimulatedClock(datetime.now(UTC))
    with use_clock(clock):
        _, secret = add_subscription(db, receiver.url(), policy=OPEN)
        outcome(db)
        assert dispatch_due(db, policy=OPEN).retrying == 1
        [row] = deliveries(db)
        assert (row.status, row.attempts, row.last_status_code) == ("pending", 1, 500)
        assert row.next_attempt_at == clock() + BACKOFF[0] and row.last_error == "HTTP 500: ok"
        assert dispatch_due(db, policy=OPEN).attempted == 0  # not due yet
        clock.advance(BACKOFF[0])
        assert dispatch_due(db, policy=OPEN).retrying == 1
        [row] = deliveries(db)
        assert row.attempts == 2 and row.next_attempt_at == clock() + BACKOFF[1]
        clock.advance(BACKOFF[1])
        assert dispatch_due(db, policy=OPEN).delivered == 1
    [row] = deliveries(db)
    assert (row.status, row.attempts, row.last_status_code) == ("delivered", 3, 200)
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == 1  # one message id
    stamps = [int(r.headers["webhook-timestamp"]) for r in receiver.requests]
    assert stamps == sorted(stamps) and stamps[-1] - stamps[0] == 35  # signed at each attempt
    Webhook(secret).verify(receiver.requests[-1].body, receiver.requests[-1].headers)


def test_after_the_last_attempt_a_delivery_is_dead_and_replay_delivers_it(
    db: SAEngine, receiver: Receiver
) -> None:
    policy = OutboundPolicy(allow_http=True, allow_private=True, max_attempts=3)
    receiver.answers = [500] * 3
    clock = SimulatedClock(datetime.now(UTC))
    with use_clock(clock):
        add_subscription(db, receiver.url(), policy=policy)
        outcome(db)
        for step in BACKOFF[:2]:
            assert dispatch_due(db, policy=policy).retrying == 1
            clock.advance(step)
        assert dispatch_due(db, policy=policy).dead == 1
        clock.advance(timedelta(days=1))
        assert dispatch_due(db, policy=policy).attempted == 0  # dead letters wait for replay
        [dead] = dead_letters(db)
        assert (dead.status, dead.attempts, dead.last_error) == ("dead", 3, "HTTP 500: ok")
        with pytest.raises(TailormailError, match="no webhook delivery has the id 999"):
            replay(db, 999)
        assert replay(db, dead.id) == 1
        assert dead_letters(db) == []
        assert dispatch_due(db, policy=policy).delivered == 1
        with pytest.raises(TailormailError, match=f"delivery {dead.id} is delivered, not dead"):
            replay(db, dead.id)
    assert len(receiver.requests) == 4
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == 1


def test_replay_all_puts_every_dead_letter_of_a_live_subscription_back(
    db: SAEngine, receiver: Receiver
) -> None:
    policy = OutboundPolicy(allow_http=True, allow_private=True, max_attempts=1)
    receiver.answers = [500] * 4
    kept, _ = add_subscription(db, receiver.url("/kept"), policy=policy)
    gone, _ = add_subscription(db, receiver.url("/gone"), policy=policy)
    outcome(db, "t1")
    outcome(db, "t2")
    assert dispatch_due(db, policy=policy).dead == 4 and len(dead_letters(db)) == 4
    remove_subscription(db, gone.id)  # its deliveries go with it
    assert {row.subscription_id for row in dead_letters(db)} == {kept.id}
    assert replay(db, "all") == 2
    assert dispatch_due(db, policy=policy).delivered == 2


def test_a_redirect_is_not_followed_and_counts_as_a_failure(
    db: SAEngine, receiver: Receiver
) -> None:
    receiver.answers = [302]
    add_subscription(db, receiver.url(), policy=OPEN)
    outcome(db)
    assert dispatch_due(db, policy=OPEN).retrying == 1
    assert [r.path for r in receiver.requests] == ["/hook"]  # /elsewhere never asked
    [row] = deliveries(db)
    assert row.last_status_code == 302 and "redirects are not followed" in str(row.last_error)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://hooks.example/", "must be https"),
        ("ftp://hooks.example/", "must be https"),
        ("https://user:pw@hooks.example/", "user name or password"),
        ("https://127.0.0.1/", "loopback"),
        ("https://169.254.169.254/latest/meta-data", "cloud metadata"),
        ("https://[::1]/", "loopback"),
        ("https://10.0.0.1/", "private"),
        ("https://2130706433/", "resolves to 127.0.0.1, a loopback"),  # decimal
        ("https://017700000001/", "loopback"),  # octal
        ("https://0x7f.1/", "loopback"),  # hexadecimal, short form
        ("https://127.1/", "loopback"),
        ("https://[::ffff:10.0.0.1]/", "private address (10.0.0.1) in IPv6 form"),
        ("https://[::ffff:127.0.0.1]/", "loopback"),
        ("https://[::ffff:169.254.169.254]/", "cloud metadata"),
        ("https://[fe80::1]/", "link-local"),
        ("https://169.254.1.1/", "link-local"),
        ("https://[fd12:3456::1]/", "unique-local"),
        ("https://100.64.0.1/", "carrier-grade NAT"),
        ("https://0.0.0.0/", "unspecified"),
        ("https://[::]/", "unspecified"),
        ("https://224.0.0.1/", "multicast"),
        ("https://240.0.0.1/", "private"),  # reserved for future use
        ("https://[2002:a00:1::]/", "private"),  # 6to4 around 10.0.0.1
        ("https://localhost/", "resolves to"),  # a name, resolved to loopback
        ("https://0177.0.0.1/", "not a valid URL"),
    ],
)
def test_a_url_that_is_not_https_or_not_public_is_refused(url: str, problem: str) -> None:
    with pytest.raises(OutboundURLError, match="refused|must|not a valid") as refused:
        check_url(url, OutboundPolicy())
    assert problem in str(refused.value)


def test_what_the_policy_allows(db: SAEngine) -> None:
    public = lambda host, port: [PUBLIC_IP]  # noqa: E731
    assert check_url("https://hooks.example/x", OutboundPolicy(), resolve=public).port == 443
    check_url("http://hooks.example/", OutboundPolicy(allow_http=True), resolve=public)
    check_url("https://127.0.0.1/", OutboundPolicy(allow_private=True))
    check_url("https://127.0.0.1/", OutboundPolicy(), allow_private=True)
    mixed = lambda host, port: [PUBLIC_IP, "10.1.2.3"]  # noqa: E731
    with pytest.raises(OutboundURLError, match="hooks.example resolves to 10.1.2.3"):
        check_url("https://hooks.example/", OutboundPolicy(), resolve=mixed)  # every address
    with pytest.raises(TailormailError, match="169.254.169.254 is the cloud metadata address"):
        add_subscription(db, "https://169.254.169.254/latest/meta-data")
    with pytest.raises(TailormailError, match="unknown webhook event opened"):
        add_subscription(db, "https://hooks.example/", events=["opened"], resolve=public)
    assert list_subscriptions(db) == []
    sub, _ = add_subscription(db, "https://127.0.0.1:9/", allow_private=True)
    assert sub.allow_private and [s.id for s in list_subscriptions(db)] == [sub.id]


def test_the_address_is_checked_again_at_delivery(db: SAEngine, receiver: Receiver) -> None:
    """A host that resolved to a public address when subscribed and to loopback now (DNS
    rebinding) gets nothing."""
    answers = {"hooks.example": [PUBLIC_IP]}
    resolve = lambda host, port: answers[host]  # noqa: E731
    add_subscription(db, f"https://hooks.example:{receiver.port}/hook", resolve=resolve)
    outcome(db)
    answers["hooks.example"] = ["127.0.0.1"]
    assert dispatch_due(db, resolve=resolve).retrying == 1
    assert receiver.requests == []
    [row] = deliveries(db)
    assert "hooks.example resolves to 127.0.0.1, a loopback address" in str(row.last_error)


def test_the_connection_goes_to_the_checked_address_with_the_name_for_tls(
    db: SAEngine, certificates: Certificates
) -> None:
    """The POST connects to the address that was checked, while the Host header and the
    TLS SNI carry the name and the certificate is verified against the name."""
    names: list[str | None] = []
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(certificates.cert, certificates.key)
    server_tls.sni_callback = lambda sock, name, context: names.append(name)
    tls_receiver = Receiver(server_tls)
    client = httpx.Client(
        verify=ssl.create_default_context(cafile=certificates.ca), trust_env=False
    )
    here = {"hooks.example": ["127.0.0.1"], "other.example": ["127.0.0.1"]}
    resolve = lambda host, port: here.get(host) or resolve_host(host, port)  # noqa: E731
    try:
        for name in ("hooks.example", "other.example"):
            url = tls_receiver.url(host=name, scheme="https")
            add_subscription(db, url, allow_private=True, resolve=resolve)
        outcome(db)
        summary = dispatch_due(db, client=client, resolve=resolve)
    finally:
        client.close()
        tls_receiver.close()
    assert (summary.delivered, summary.retrying) == (1, 1)
    [request] = tls_receiver.requests
    assert request.headers["Host"] == f"hooks.example:{tls_receiver.port}"
    assert sorted(names) == ["hooks.example", "other.example"]  # a connection each
    failed = [row for row in deliveries(db) if row.status == "pending"]
    assert "CERTIFICATE_VERIFY_FAILED" in str(failed[0].last_error)  # other.example's


def test_two_dispatchers_at_once_never_post_one_delivery_twice(
    db: SAEngine, receiver: Receiver
) -> None:
    receiver.delay = 0.01
    add_subscription(db, receiver.url(), policy=OPEN)
    with session_scope(db) as session:
        for n in range(40):
            enqueue(session, trigger_id=f"t{n}", campaign="alerts", event_type="sent", data={})
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def dispatcher() -> None:
        try:
            start.wait()
            while dispatch_due(db, limit=5, policy=OPEN).claimed:
                pass
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=dispatcher) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    ids = [r.headers["webhook-id"] for r in receiver.requests]
    assert len(ids) == 40 and len(set(ids)) == 40
    assert {(r.status, r.attempts) for r in deliveries(db)} == {("delivered", 1)}


def test_a_lost_lease_is_not_posted(db: SAEngine, receiver: Receiver) -> None:
    """A delivery whose lease another dispatcher holds is neither posted nor settled."""
    add_subscription(db, receiver.url(), policy=OPEN)
    outcome(db)
    later = datetime.now(UTC) + timedelta(minutes=5)
    with session_scope(db) as session:
        row = session.scalars(select(WebhookDeliveryRow)).one()
        row.lease_owner, row.lease_expires = "someone-else", later
    assert dispatch_due(db, policy=OPEN).attempted == 0
    assert receiver.requests == []
    with use_clock(lambda: later + timedelta(seconds=1)):  # that dispatcher died
        assert dispatch_due(db, policy=OPEN).delivered == 1


def test_forget_and_retention_delete_deliveries(db: SAEngine, receiver: Receiver) -> None:
    add_subscription(db, receiver.url(), policy=OPEN)
    outcome(db, "t1")
    outcome(db, "t2")
    outcome(db, "t2", event="clicked")
    with session_scope(db) as session:
        assert forget_triggers(session, ["t2", "t2", "unknown"]) == 2
    assert [r.trigger_id for r in deliveries(db)] == ["t1"]
    with session_scope(db) as session:
        assert purge_older_than(session, datetime.now(UTC) - timedelta(days=1)) == 0
        assert purge_older_than(session, datetime.now(UTC) + timedelta(seconds=1)) == 1
    assert deliveries(db) == []


def test_a_removed_subscription_gets_nothing_more(db: SAEngine, receiver: Receiver) -> None:
    sub, _ = add_subscription(db, receiver.url(), policy=OPEN)
    outcome(db)
    removed = remove_subscription(db, sub.id)
    assert removed.disabled_at is not None and removed.secret == ""
    assert remove_subscription(db, sub.id).disabled_at == removed.disabled_at  # no change
    assert outcome(db) == 0 and deliveries(db) == []
    assert dispatch_due(db, policy=OPEN).attempted == 0 and receiver.requests == []
    with pytest.raises(TailormailError, match="no webhook subscription has the id 'wh_nope'"):
        remove_subscription(db, "wh_nope")


def test_an_answer_is_read_only_up_to_its_limit() -> None:
    big = httpx.Response(500, stream=httpx.ByteStream(b"x" * (RESPONSE_LIMIT * 50)))
    assert len(read_some(big, time.monotonic() + 5)) == RESPONSE_LIMIT
