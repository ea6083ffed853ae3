"""State and API semantics of the fake WeChat (``api.weixin.qq.com`` + WeChat Pay's sender).

:class:`FakeWechat` holds one mini-program (appid/secret), one WeChat Pay merchant (mchid,
APIv3 key, an RSA-2048 signing key generated at start and its public key under a
``PUB_KEY_ID_…`` serial), the payments made to it, the access tokens it issued, and the
notifications it owes the merchant's ``notify_url``. It answers as WeChat does (PLATFORMS.md
§4): ``cgi-bin/stable_token`` (normal mode hands back the current token until it nears
expiry; ``force_refresh`` replaces it), ``errcode`` 41001/40001/42001 for missing, bad or
expired tokens,
``upload_shipping_info`` (10060001 not found / not yet indexed for the first
``not_indexed_calls`` calls per payment, 10060003 when already shipped, 10060004 when
refunded or completed), ``get_order`` and ``is_trade_managed``. Time comes from an injectable
clock so tests move hours without sleeping.

It is a test double: it must never be pointed at, or hold credentials for, the real platform.
"""

from __future__ import annotations

import itertools
import json
import secrets
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, ClassVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from connectors.common.shapes import ShapeFaults, garble
from connectors.fakebase import CatalogItem, FakeBase, OrderRequest, error_outcome
from connectors.fakebase import Faults as BaseFaults
from connectors.fakekit import FakeClock as BaseFakeClock
from connectors.fakekit import WriteBackLog, records, wall_now
from connectors.wechat.crypto import SIGNATURE_TYPE, encrypt_resource, sign

CHINA = timezone(timedelta(hours=8))
TOKEN_TTL = timedelta(seconds=7200)
TOKEN_GRACE = timedelta(minutes=5)  # stable_token renews this long before expiry
#: WeChat Pay's retry schedule after a failed delivery (15 s … 6 h; 24 h 4 min in all).
RETRY_DELAYS = tuple(timedelta(seconds=s) for s in (
    15, 15, 30, 180, 600, 1200, 1800, 1800, 1800, 3600, 10800, 10800, 10800, 21600, 21600))

Clock = Callable[[], datetime]


class FakeClock(BaseFakeClock):
    """A settable clock (aware UTC) for the fake and the connector under test; it starts at
    the wall time unless told otherwise."""

    def __init__(self, start: datetime | None = None) -> None:
        super().__init__(start or wall_now())


@dataclass
class FakePayment:
    out_trade_no: str
    transaction_id: str
    openid: str
    total: int
    attach: str = ""
    description: str = "virtual goods"
    state: int = 1  # get_order order_state: 1 paid, 2 shipped, 3/4 done, 5 refunded
    paid_at: datetime = field(default_factory=wall_now)
    shipments: int = 0
    item_desc: str | None = None
    upload_calls: int = 0
    refunded: int = 0

    def to_order(self, mchid: str) -> dict[str, Any]:
        return {
            "transaction_id": self.transaction_id, "merchant_id": mchid,
            "merchant_trade_no": self.out_trade_no, "description": self.description,
            "paid_amount": self.total, "openid": self.openid,
            "trade_create_time": int(self.paid_at.timestamp()),
            "pay_time": int(self.paid_at.timestamp()), "order_state": self.state,
            "in_complaint": False,
            # get_order names the uploaded item_desc ``goods_desc``.
            "shipping": {"delivery_mode": 1, "logistics_type": 3,
                         "finish_shipping": self.shipments > 0,
                         "goods_desc": self.item_desc or "",
                         "finish_shipping_count": self.shipments,
                         "shipping_list": [{"goods_desc": self.item_desc, "tracking_no": "",
                                            "express_company": "",
                                            "upload_time": int(self.paid_at.timestamp())}]
                         if self.item_desc else []},
        }


@dataclass
class Notification:
    notification_id: str
    event_type: str
    summary: str
    original_type: str
    associated_data: str
    resource: dict[str, Any]
    created: datetime
    due: datetime
    attempts: int = 0
    delivered: bool = False
    gave_up: bool = False


@dataclass
class Faults(BaseFaults):
    """Injected failures; counters count down as they fire (``throttle``: errcode 45011;
    the push faults act on WeChat Pay's notifications)."""

    busy: int = 0  # errcode -1 to the next N API calls
    not_indexed_calls: int = 0  # 10060001 for each payment's first N shipping uploads
    managed: bool = True  # is_trade_managed


#: What the fake sells: the SKU of ``shops/example-wechat.yaml`` (the mini-program puts it
#: in the payment's ``attach``).
CATALOG = (CatalogItem("GAME-50", "sku_id", "游戏点卡50元 Game card 50", "50.00"),)


#: WeChat Pay's limit on ``attach`` (characters).
ATTACH_MAX = 128


def sku_attach(sku: str, quantity: int, message: str | None = None) -> str:
    """The ``attach`` a mini-program's backend sets: the SKU, the quantity and what the buyer
    typed for the seller; ValueError when it would not fit WeChat Pay's 128 characters."""
    data: dict[str, Any] = {"sku": sku, "qty": quantity}
    if message:
        data["message"] = message
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    if len(text) > ATTACH_MAX:
        raise ValueError(f"message: attach would exceed {ATTACH_MAX} characters")
    return text


def _refusal(answer: dict[str, Any]) -> str | None:
    """The refusal in an API answer (WeChat answers errors as data), or None."""
    if answer.get("errcode") == 0:
        return None
    return f"{answer.get('errcode')} {answer.get('errmsg')}"


def _upload_sent(fake: FakeWechat, body: dict[str, Any]) -> tuple[object, Mapping[str, object]]:
    """(the merchant's order number, what to record) of one shipping upload."""
    key = body.get("order_key")
    key = key if isinstance(key, dict) else {}
    if key.get("order_number_type") == 2:
        payment = fake.find_payment(key.get("transaction_id"), None, None)
    else:
        payment = fake.find_payment(None, key.get("mchid"), key.get("out_trade_no"))
    shipping = body.get("shipping_list")
    first = shipping[0] if isinstance(shipping, list) and shipping \
        and isinstance(shipping[0], dict) else {}
    return (payment.out_trade_no if payment is not None else "",
            {"order_number_type": key.get("order_number_type"),
             "transaction_id": key.get("transaction_id"), "out_trade_no": key.get("out_trade_no"),
             "logistics_type": body.get("logistics_type"), "item_desc": first.get("item_desc")})


class FakeWechat(FakeBase):
    """The fake's state; every method is thread-safe."""

    platform: ClassVar[str] = "wechat"
    pushes: ClassVar[bool] = True  # WeChat Pay's notifications
    #: The names these faults had before every fake shared one set.
    fault_aliases: ClassVar[Mapping[str, str]] = {
        "fail_next": "http_500", "throttle_next": "throttle", "busy_next": "busy"}

    def __init__(self, *, appid: str = "wxfakeappid000001",
                 app_secret: str = "fake-app-secret",  # noqa: S107 - the fake's test secret
                 mchid: str = "1900000109", apiv3_key: str | None = None,
                 clock: Clock | None = None, notify_url: str | None = None,
                 clock_offset: float = 0.0) -> None:
        self.appid, self.app_secret, self.mchid = appid, app_secret, mchid
        self.apiv3_key = apiv3_key or secrets.token_hex(16)  # 32 characters
        #: ``clock_offset``: seconds WeChat's clock runs ahead of ``clock`` (negative:
        #: behind); every time the fake reads or writes (``self.clock()``) and its ``Date``
        #: header follow it.
        self._init_base(clock or wall_now, clock_offset)
        self.clock: Clock = self.now
        self.notify_url = notify_url
        self.private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.serial = "PUB_KEY_ID_01" + secrets.token_hex(12).upper()
        self.payments: dict[str, FakePayment] = {}
        #: The retry schedule (a test may compress time; the number of retries stays the same).
        self.retry_delays: tuple[timedelta, ...] = RETRY_DELAYS
        #: Called with (API path, body) before each authenticated API call.
        self.on_call: Callable[[str, Any], None] | None = None
        self.notifications: list[Notification] = []
        self.tokens: dict[str, datetime] = {}  # token → expiry
        self.current_token: str | None = None
        self.token_grants = 0
        self.authorized = True
        self.faults: Faults = Faults()
        #: Malformed notifications and answers on demand (see :meth:`corrupt_order`).
        self.shapes = ShapeFaults()
        self._seq = itertools.count(1)
        #: Every shipping upload received, refused ones too (``snapshot()["write_backs"]``).
        self.writebacks = WriteBackLog()

    # -- keys for the connector's config -------------------------------------------------

    @property

    def public_key_pem(self) -> str:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")

    # -- payments ------------------------------------------------------------------------

    def create_payment(self, *, total: int = 1000, attach: str = "",
                       out_trade_no: str | None = None, openid: str | None = None,
                       description: str = "virtual goods",
                       notify: bool = True, paid_at: datetime | None = None) -> str:
        """A paid payment (at ``paid_at``, or now) and its TRANSACTION.SUCCESS
        notification; its out_trade_no."""
        with self.lock:
            seq = next(self._seq)
            oid = out_trade_no or f"WX{seq:08d}{secrets.token_hex(3)}"
            payment = FakePayment(
                out_trade_no=oid, transaction_id=f"42000{seq:05d}{secrets.randbelow(10**18):018d}",
                openid=openid or f"o{secrets.token_hex(14)}", total=total, attach=attach,
                description=description, paid_at=paid_at or self.clock())
            self.payments[oid] = payment
            if notify:
                self._notify_paid(payment)
            return oid

    def transaction(self, payment: FakePayment) -> dict[str, Any]:
        return {
            "appid": self.appid, "mchid": self.mchid, "out_trade_no": payment.out_trade_no,
            "transaction_id": payment.transaction_id, "trade_type": "JSAPI",
            "trade_state": "SUCCESS", "trade_state_desc": "支付成功", "bank_type": "OTHERS",
            "attach": payment.attach,
            "success_time": payment.paid_at.astimezone(CHINA).isoformat(timespec="seconds"),
            "payer": {"openid": payment.openid},
            "amount": {"total": payment.total, "payer_total": payment.total, "currency": "CNY",
                       "payer_currency": "CNY"},
        }

    def _notify_paid(self, payment: FakePayment) -> Notification:
        return self._queue("TRANSACTION.SUCCESS", "支付成功", "transaction", "transaction",
                           self.transaction(payment))

    def refund(self, out_trade_no: str, amount: int | None = None) -> str:
        """Refund a payment (all of it by default) and queue REFUND.SUCCESS; the refund id."""
        with self.lock:
            payment = self.payments[out_trade_no]
            value = payment.total if amount is None else amount
            payment.refunded += value
            if payment.refunded >= payment.total:
                payment.state = 5
            refund_id = f"50300{next(self._seq):05d}{secrets.randbelow(10**16):016d}"
            self._queue("REFUND.SUCCESS", "退款成功", "refund", "", {
                "mchid": self.mchid, "out_trade_no": out_trade_no,
                "transaction_id": payment.transaction_id,
                "out_refund_no": f"R{out_trade_no}", "refund_id": refund_id,
                "refund_status": "SUCCESS",
                "success_time": self.clock().astimezone(CHINA).isoformat(timespec="seconds"),
                "user_received_account": "支付用户零钱",
                "amount": {"total": payment.total, "refund": value,
                           "payer_total": payment.total, "payer_refund": value}})
            return refund_id

    def corrupt_order(self, out_trade_no: str, path: str, how: str) -> None:
        """Send payment ``out_trade_no`` with the field at ``path`` (dotted, into the
        decrypted notification resource, e.g. ``amount.total``; ``get_order`` answers are
        bent the same way) dropped, null or a huge number string; :meth:`clear_corruption`
        ends it."""
        self.shapes.corrupt(out_trade_no, path, how)

    def garble_answers(self, how: str, count: int = 1) -> None:
        """The next ``count`` notification bodies are an HTML page (``html``) or JSON cut
        off in the middle (``truncated``), signed as sent."""
        self.shapes.garble_next(how, count)

    def clear_corruption(self, out_trade_no: str | None = None) -> None:
        self.shapes.clear(out_trade_no)

    def set_state(self, out_trade_no: str, state: int) -> None:
        with self.lock:
            self.payments[out_trade_no].state = state

    # -- notifications -------------------------------------------------------------------

    def _queue(self, event_type: str, summary: str, original_type: str, associated_data: str,
               resource: dict[str, Any]) -> Notification:
        now = self.clock()
        note = Notification(
            notification_id=f"EV-{uuid.uuid4()}", event_type=event_type, summary=summary,
            original_type=original_type, associated_data=associated_data, resource=resource,
            created=now, due=now)
        self.notifications.append(note)
        return note

    def notification_for(self, out_trade_no: str) -> Notification:
        with self.lock:
            for note in self.notifications:
                if note.resource.get("out_trade_no") == out_trade_no \
                        and note.event_type == "TRANSACTION.SUCCESS":
                    return note
            return self._notify_paid(self.payments[out_trade_no])

    def envelope(self, note: Notification) -> bytes:
        """The notification body: the resource encrypted afresh with a new nonce."""
        nonce = secrets.token_hex(6)  # 12 characters
        resource = self.shapes.apply(note.resource.get("out_trade_no"), note.resource)
        plain = json.dumps(resource, ensure_ascii=False).encode("utf-8")
        body = json.dumps({
            "id": note.notification_id,
            "create_time": note.created.astimezone(CHINA).isoformat(timespec="seconds"),
            "resource_type": "encrypt-resource", "event_type": note.event_type,
            "summary": note.summary,
            "resource": {"original_type": note.original_type, "algorithm": "AEAD_AES_256_GCM",
                         "ciphertext": encrypt_resource(self.apiv3_key, nonce,
                                                        note.associated_data, plain),
                         "associated_data": note.associated_data, "nonce": nonce},
        }, ensure_ascii=False, separators=(",", ":"))
        if (bad := self.shapes.take_answer()) is not None:
            return garble(body, bad)[0]
        return body.encode("utf-8")

    def signed(self, body: bytes, stamp: datetime) -> dict[str, str]:
        """WeChat Pay's headers for ``body`` sent at ``stamp``."""
        timestamp = str(int(stamp.timestamp()))
        nonce = secrets.token_hex(16).upper()
        return {
            "Content-Type": "application/json",
            "Wechatpay-Timestamp": timestamp, "Wechatpay-Nonce": nonce,
            "Wechatpay-Serial": self.serial, "Wechatpay-Signature-Type": SIGNATURE_TYPE,
            "Wechatpay-Signature": sign(self.private_key, timestamp, nonce, body),
            "Request-ID": str(uuid.uuid4()),
        }

    def due_notifications(self) -> list[Notification]:
        now = self.clock()
        with self.lock:
            return [n for n in self.notifications
                    if not n.delivered and not n.gave_up and n.due <= now]

    def record_attempt(self, note: Notification, ok: bool) -> None:
        with self.lock:
            note.attempts += 1
            if ok:
                note.delivered = True
            elif note.attempts > len(self.retry_delays):
                note.gave_up = True
            else:
                note.due = self.clock() + self.retry_delays[note.attempts - 1]

    # -- tokens --------------------------------------------------------------------------

    def revoke(self) -> None:
        """The app secret was reset: every token is void and the old secret is refused."""
        with self.lock:
            self.authorized = False
            self.tokens.clear()
            self.current_token = None

    def expire_tokens(self) -> None:
        """Every issued token expires now (calls answer 42001)."""
        with self.lock:
            now = self.clock()
            self.tokens = dict.fromkeys(self.tokens, now)

    def stable_token(self, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            if "force_refresh" in body and not isinstance(body["force_refresh"], bool):
                # invented: WeChat's answer to a non-boolean force_refresh is not documented
                return {"errcode": 47001, "errmsg": "data format error"}
            if body.get("grant_type") != "client_credential":
                return {"errcode": 40002, "errmsg": "invalid grant_type"}
            if body.get("appid") != self.appid:
                return {"errcode": 40013, "errmsg": "invalid appid"}
            if body.get("secret") != self.app_secret or not self.authorized:
                return {"errcode": 40125, "errmsg": "invalid appsecret"}
            now = self.clock()
            current = self.current_token
            expiry = self.tokens.get(current) if current else None
            if body.get("force_refresh") is True or expiry is None \
                    or expiry - now <= TOKEN_GRACE:
                if body.get("force_refresh") is True and current:
                    self.tokens.pop(current, None)  # force_refresh voids the old token
                current = "FAKE_" + secrets.token_urlsafe(48)
                self.tokens[current] = now + TOKEN_TTL
                self.current_token = current
                self.token_grants += 1
            assert current is not None
            left = int((self.tokens[current] - now).total_seconds())
            return {"access_token": current, "expires_in": left}

    def _token_error(self, token: str | None) -> dict[str, Any] | None:
        if not token:
            return {"errcode": 41001, "errmsg": "access_token missing"}
        expiry = self.tokens.get(token)
        if expiry is None:
            return {"errcode": 40001, "errmsg": "invalid credential, access_token is invalid "
                                                "or not latest"}
        if expiry <= self.clock():
            return {"errcode": 42001, "errmsg": "access_token expired"}
        return None

    # -- API -----------------------------------------------------------------------------

    def api(self, path: str, token: str | None, body: Any) -> dict[str, Any]:
        with self.lock:
            if (error := self._token_error(token)) is not None:
                return error
            if self.on_call is not None:
                self.on_call(path, body)
            if self.take_fault("throttle"):
                return {"errcode": 45011, "errmsg": "api minute-quota reach limit"}
            if self.take_fault("busy"):
                return {"errcode": -1, "errmsg": "system error"}
            if not isinstance(body, dict):
                return {"errcode": 47001, "errmsg": "data format error"}
            if path == "upload_shipping_info":
                return self._upload(body)
            if path == "get_order":
                payment = self.find_payment(body.get("transaction_id"), body.get("merchant_id"),
                                     body.get("merchant_trade_no"))
                if payment is None:
                    return {"errcode": 10060001, "errmsg": "支付单不存在"}
                return {"errcode": 0, "errmsg": "ok",
                        "order": self.shapes.apply(payment.out_trade_no,
                                                   payment.to_order(self.mchid))}
            if path == "is_trade_managed":
                if body.get("appid") != self.appid:
                    return {"errcode": 47001, "errmsg": "data format error"}
                return {"errcode": 0, "errmsg": "ok", "is_trade_managed": self.faults.managed}
            return {"errcode": 404, "errmsg": "unknown api"}

    def find_payment(self, transaction_id: Any, mchid: Any,
                     out_trade_no: Any) -> FakePayment | None:
        """The payment named by WeChat's transaction id, or by the merchant's order number."""
        if transaction_id:
            return next((p for p in self.payments.values()
                         if p.transaction_id == transaction_id), None)
        if mchid != self.mchid:
            return None
        return self.payments.get(str(out_trade_no or ""))

    @records("ship", _upload_sent, refusal=_refusal)
    def _upload(self, body: dict[str, Any]) -> dict[str, Any]:
        key = body.get("order_key")
        bad = {"errcode": 47001, "errmsg": "data format error"}
        if not isinstance(key, dict) or not _number_in(key.get("order_number_type"), (1, 2)):
            return bad
        if key["order_number_type"] == 2:
            payment = self.find_payment(key.get("transaction_id"), None, None)
        else:
            payment = self.find_payment(None, key.get("mchid"), key.get("out_trade_no"))
        shipping = body.get("shipping_list")
        if not _number_in(body.get("logistics_type"), (1, 2, 3, 4)) \
                or not _number_in(body.get("delivery_mode"), (1,)) \
                or not isinstance(shipping, list) or len(shipping) != 1 \
                or not isinstance(shipping[0], dict) \
                or not str(shipping[0].get("item_desc") or "") \
                or len(str(shipping[0]["item_desc"])) > 120 \
                or not isinstance(body.get("upload_time"), str):
            return bad
        if _parse_rfc3339(body["upload_time"]) is None:
            return bad
        if payment is None:
            return {"errcode": 10060001, "errmsg": "支付单不存在"}
        payment.upload_calls += 1
        if payment.upload_calls <= self.faults.not_indexed_calls:
            return {"errcode": 10060001, "errmsg": "支付单不存在"}
        payer = body.get("payer")
        if not isinstance(payer, dict) or payer.get("openid") != payment.openid:
            return {"errcode": 10060012, "errmsg": "openid mismatch"}
        if payment.state == 2:
            return {"errcode": 10060003, "errmsg": "支付单已使用过修改发货的机会"}
        if payment.state != 1:
            return {"errcode": 10060004, "errmsg": "支付单处于不可发货的状态"}
        payment.state = 2
        payment.shipments += 1
        payment.item_desc = str(shipping[0]["item_desc"])
        return {"errcode": 0, "errmsg": "ok"}

    def catalog(self) -> list[CatalogItem]:
        return list(CATALOG)

    def create_paid_order(self, request: OrderRequest) -> str:
        item = self.catalog_item(request.sku)
        price = Decimal(item.price if item is not None else "1.00")
        return self.create_payment(
            total=int(price * 100) * request.quantity,
            attach=sku_attach(request.sku, request.quantity, request.message),
            openid=request.buyer, description=item.title if item else request.sku,
            paid_at=request.paid_at)

    def fault_flags(self) -> dict[str, Any]:
        return {"authorized": self.authorized}

    def call_outcome(self, status: int, document: Any) -> str:
        if isinstance(document, dict) and document.get("errcode") not in (None, 0):
            return error_outcome(document, "errcode", "errmsg")
        return super().call_outcome(status, document)

    def platform_snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "payments": {k: {"state": p.state, "shipments": p.shipments,
                                 "transaction_id": p.transaction_id, "total": p.total,
                                 "item_desc": p.item_desc}
                             for k, p in self.payments.items()},
                "notifications": [{"id": n.notification_id, "event_type": n.event_type,
                                   "attempts": n.attempts, "delivered": n.delivered,
                                   "gave_up": n.gave_up, "due": n.due.isoformat()}
                                  for n in self.notifications],
                "token_grants": self.token_grants, "authorized": self.authorized,
            }


def _number_in(value: Any, allowed: tuple[int, ...]) -> bool:
    """Whether ``value`` is a JSON number among ``allowed`` (``true`` is not 1 here)."""
    return type(value) is int and value in allowed


def _parse_rfc3339(text: str) -> datetime | None:
    """An RFC 3339 time (its offset is required); None for anything else."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None
