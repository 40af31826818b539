"""Test-side stand-ins for the providers: keys generated here, payloads as documented.

Each ``Signer`` builds the request a provider would send for one of our sends, signed the
provider's way, and knows how to spoil it (bad signature, missing header, stale time).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import secrets
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

UTC = dt.UTC
Request = tuple[dict[str, str], bytes]


def now() -> dt.datetime:
    return dt.datetime.now(UTC)


def self_signed(common_name: str) -> tuple[rsa.RSAPrivateKey, bytes]:
    """An RSA key and a self-signed PEM certificate for ``common_name``."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    start = now() - dt.timedelta(days=1)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(common_name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class SendGridSigner:
    """SendGrid's signed event webhook: ECDSA P-256 over timestamp + body."""

    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    provider = "sendgrid"
    signature_header = "X-Twilio-Email-Event-Webhook-Signature"

    def options(self) -> dict[str, Any]:
        der = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return {"public_key": base64.b64encode(der).decode()}

    def payload(self, kind: str, send_id: int, email: str, at: dt.datetime) -> bytes:
        event: dict[str, Any] = {
            "email": email,
            "timestamp": int(at.timestamp()),
            "smtp-id": f"<{send_id}@example.com>",
            "event": {"complaint": "spamreport"}.get(kind, kind),
            "category": ["alerts"],
            "sg_event_id": f"sg-{uuid.uuid4().hex}",
            "sg_message_id": f"x{send_id}.filterdrecv-1.2.3",
            "tailormail_send_id": str(send_id),
        }
        if kind == "bounce":
            event |= {"reason": "550 5.1.1 unknown user", "status": "5.1.1", "type": "bounce"}
        return json.dumps([event]).encode()

    def sign(self, body: bytes, at: dt.datetime | None = None) -> dict[str, str]:
        stamp = str(int((at or now()).timestamp()))
        signature = self.key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return {
            self.signature_header: base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
        }


@dataclass
class MailgunSigner:
    """Mailgun: HMAC-SHA256(timestamp + token) in the body's ``signature`` object."""

    key: str = field(default_factory=lambda: secrets.token_hex(16))
    provider = "mailgun"
    signature_header = ""  # the signature travels in the body

    def options(self) -> dict[str, Any]:
        return {"signing_key_env": "TEST_MAILGUN_SIGNING_KEY"}

    def payload(self, kind: str, send_id: int, email: str, at: dt.datetime) -> bytes:
        names = {"bounce": "failed", "complaint": "complained", "delivered": "delivered"}
        event: dict[str, Any] = {
            "event": names[kind],
            "id": f"mg-{uuid.uuid4().hex[:20]}",
            "timestamp": at.timestamp(),
            "recipient": email,
            "message": {"headers": {"message-id": f"{send_id}.mg@example.com"}},
            "user-variables": {"tailormail_send_id": str(send_id)},
        }
        if kind == "bounce":
            event |= {"severity": "permanent", "delivery-status": {"message": "no such user"}}
        return json.dumps({"event-data": event}).encode()

    def sign(self, body: bytes, at: dt.datetime | None = None) -> dict[str, str]:
        # Mailgun's signature is part of the JSON body: re-encode it with one added.
        raise NotImplementedError

    def signed_body(self, body: bytes, at: dt.datetime | None = None) -> bytes:
        stamp = str(int((at or now()).timestamp()))
        token = secrets.token_hex(25)
        digest = hmac.new(self.key.encode(), (stamp + token).encode(), hashlib.sha256)
        envelope = json.loads(body)
        signature = {"timestamp": stamp, "token": token, "signature": digest.hexdigest()}
        return json.dumps({"signature": signature} | envelope).encode()


@dataclass
class PostmarkSigner:
    """Postmark: basic-auth credentials in the webhook URL."""

    password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    provider = "postmark"
    signature_header = "Authorization"

    def options(self) -> dict[str, Any]:
        return {"username": "hooks", "password_env": "TEST_POSTMARK_PASSWORD"}

    def payload(self, kind: str, send_id: int, email: str, at: dt.datetime) -> bytes:
        stamp = at.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"  # Postmark's seven digits
        metadata = {"tailormail_send_id": str(send_id)}
        message_id = str(uuid.uuid5(uuid.NAMESPACE_OID, str(send_id)))
        if kind == "delivered":
            record = {"RecordType": "Delivery", "DeliveredAt": stamp, "Recipient": email}
        else:
            record = {
                "RecordType": "Bounce" if kind == "bounce" else "SpamComplaint",
                "ID": secrets.randbelow(2**53),
                "Type": "HardBounce" if kind == "bounce" else "SpamComplaint",
                "TypeCode": 1 if kind == "bounce" else 512,
                "Email": email,
                "BouncedAt": stamp,
                "Description": "The server was unable to deliver your message",
            }
        record |= {"MessageID": message_id, "Metadata": metadata, "MessageStream": "outbound"}
        return json.dumps(record).encode()

    def sign(self, body: bytes, at: dt.datetime | None = None) -> dict[str, str]:
        pair = f"hooks:{self.password}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode()}


@dataclass
class SNSSigner:
    """SES event publishing through SNS, signed with a certificate made here."""

    version: str = "2"
    topic: str = "arn:aws:sns:eu-west-1:123456789012:ses-events"
    cert_url: str = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-test.pem"
    provider = "ses"
    signature_header = ""
    confirmations: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.key, self.cert = self_signed("sns.amazonaws.com")

    def options(self) -> dict[str, Any]:
        return {"topic_arns": [self.topic]}

    def client(self) -> httpx.Client:
        """What the handler fetches through: the certificate, and confirmation URLs."""

        def answer(request: httpx.Request) -> httpx.Response:
            if str(request.url) == self.cert_url:
                return httpx.Response(200, content=self.cert)
            if "Action=ConfirmSubscription" in str(request.url):
                self.confirmations.append(str(request.url))
                return httpx.Response(200, text="<ConfirmSubscriptionResponse/>")
            return httpx.Response(404)

        return httpx.Client(transport=httpx.MockTransport(answer))

    def payload(self, kind: str, send_id: int, email: str, at: dt.datetime) -> bytes:
        stamp = at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"
        mail = {
            "timestamp": stamp,
            "source": "alerts@example.com",
            "messageId": f"0102018{send_id:08d}-ses",
            "destination": [email],
            "tags": {"tailormail_send_id": [str(send_id)]},
        }
        event: dict[str, Any] = {"eventType": kind.capitalize(), "mail": mail}
        if kind == "bounce":
            event["bounce"] = {
                "bounceType": "Permanent",
                "bounceSubType": "General",
                "bouncedRecipients": [{"emailAddress": email, "status": "5.1.1"}],
                "timestamp": stamp,
                "feedbackId": uuid.uuid4().hex,
            }
        elif kind == "complaint":
            event["complaint"] = {
                "complainedRecipients": [{"emailAddress": email}],
                "timestamp": stamp,
                "feedbackId": uuid.uuid4().hex,
                "complaintFeedbackType": "abuse",
            }
        else:
            event["delivery"] = {"timestamp": stamp, "recipients": [email]}
        return json.dumps(event).encode()

    def envelope(self, message: bytes, at: dt.datetime | None = None, **extra: str) -> bytes:
        """The SNS ``Notification`` (or another type via ``Type=``) around ``message``."""
        moment = at or now()
        fields = {
            "Type": "Notification",
            "MessageId": str(uuid.uuid4()),
            "TopicArn": self.topic,
            "Message": message.decode(),
            "Timestamp": moment.strftime("%Y-%m-%dT%H:%M:%S.") + "000Z",
            "SignatureVersion": self.version,
            "SigningCertURL": self.cert_url,
            "UnsubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe",
        } | extra
        order = ["Message", "MessageId", "Subject", "SubscribeURL", "Timestamp", "Token"]
        order += ["TopicArn", "Type"]
        if fields["Type"] == "Notification":
            order = [n for n in order if n not in ("SubscribeURL", "Token")]
        text = "".join(f"{n}\n{fields[n]}\n" for n in order if n in fields)
        algorithm = hashes.SHA1() if self.version == "1" else hashes.SHA256()
        signature = self.key.sign(text.encode(), padding.PKCS1v15(), algorithm)
        fields["Signature"] = base64.b64encode(signature).decode()
        return json.dumps(fields).encode()

    def sign(self, body: bytes, at: dt.datetime | None = None) -> dict[str, str]:
        return {"x-amz-sns-message-type": "Notification"}


@dataclass
class StandardSigner:
    """Standard Webhooks: HMAC-SHA256 over id.timestamp.body, ``v1,`` base64."""

    key: bytes = field(default_factory=lambda: secrets.token_bytes(24))
    provider = "standard"
    signature_header = "webhook-signature"

    @property
    def secret(self) -> str:
        return "whsec_" + base64.b64encode(self.key).decode()

    def options(self) -> dict[str, Any]:
        return {"secret_env": "TEST_STANDARD_SECRET"}

    def payload(self, kind: str, send_id: int, email: str, at: dt.datetime) -> bytes:
        data = {"send_id": send_id, "recipient": email}
        event = {"type": kind, "timestamp": at.isoformat(), "data": data}
        return json.dumps(event).encode()

    def sign(self, body: bytes, at: dt.datetime | None = None) -> dict[str, str]:
        webhook_id = f"msg_{uuid.uuid4().hex}"
        stamp = str(int((at or now()).timestamp()))
        signed = f"{webhook_id}.{stamp}.".encode() + body
        digest = base64.b64encode(hmac.new(self.key, signed, hashlib.sha256).digest()).decode()
        return {
            "webhook-id": webhook_id,
            "webhook-timestamp": stamp,
            "webhook-signature": f"v1,{base64.b64encode(b'old key').decode()} v1,{digest}",
        }


Signer = SendGridSigner | MailgunSigner | PostmarkSigner | SNSSigner | StandardSigner


def signed_request(
    signer: Signer, kind: str, send_id: int, email: str, at: dt.datetime | None = None
) -> Request:
    """The headers and body of one provider request about ``send_id``, signed at ``at``."""
    moment = at or now()
    body = signer.payload(kind, send_id, email, moment)
    if isinstance(signer, MailgunSigner):
        return {"Content-Type": "application/json"}, signer.signed_body(body, moment)
    if isinstance(signer, SNSSigner):
        return signer.sign(b""), signer.envelope(body, moment)
    return {"Content-Type": "application/json"} | signer.sign(body, moment), body
