"""闲管家's virtual-supply standard (虚拟货源标准接口) on the wire: paths, fields, envelope,
error codes, order states. Pure functions; no network, no database.

Sources (see the README's 闲鱼 section): the standard's documentation (apifox shared doc
``cf4d53fd-8bb2-41c5-8da3-371ba9a38956``: 接入说明, 查询平台信息, 查询商户信息, 查询商品列表/详情,
订阅商品变更通知, 创建卡密/直充订单 (直充: page ``api-205398512``, its ``biz_content`` below),
查询订单详情, 订单退款通知, 订单回调通知).

* Every answer is ``{"code": 0, "msg": "OK", "data": {...}}``; any other ``code`` is a failure
  (HTTP status stays 200). The refund notice alone is answered
  ``{"result": "success", "msg": "接收成功"}``.
* "闲管家所有参数都是强校验": fields have exact JSON types (an integer is never a string), so
  requests are checked strictly and answers are typed exactly.
* Order states: 10 处理中 (the result follows through ``notify_url``), 20 已成功, 30 已失败.
* Error codes: 401 signature, 408 timestamp outside the window, 1201 order fields wrong, 1209
  order timed out (query it), from the standard's table as copied by an implementer; 1100
  goods not found, 1200 order not found, 1202 price above ``max_amount`` from an implementer's
  gateway (⚠ not seen in the vendor's own text).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from connectors.base import HandedCode
from connectors.gateway import (
    Goods,
    GoodsKind,
    PurchaseState,
    PurchaseView,
    Refusal,
    Subscription,
)

# -- paths (below the gateway address the merchant registers) --------------------------------
OPEN_INFO = "goofish/open/info"
USER_INFO = "goofish/user/info"
GOODS_LIST = "goofish/goods/list"
GOODS_DETAIL = "goofish/goods/detail"
SUBSCRIBE = "goofish/goods/change/subscribe"
UNSUBSCRIBE = "goofish/goods/change/unsubscribe"
SUBSCRIBE_LIST = "goofish/goods/change/subscribe/list"
PURCHASE = "goofish/order/purchase/create"
RECHARGE = "goofish/order/recharge/create"
ORDER_DETAIL = "goofish/order/detail"
REFUND_NOTIFY = "goofish/order/refund/notify"
REFUND_APPLY = "goofish/order/refund/apply"

# -- codes ---------------------------------------------------------------------------------
OK = 0
SIGN_ERROR = 401
NOT_FOUND_PATH = 404
TIMESTAMP_EXPIRED = 408
GOODS_NOT_FOUND = 1100
ORDER_NOT_FOUND = 1200
BAD_ORDER = 1201
PRICE_ABOVE_MAX = 1202
ORDER_TIMEOUT = 1209
SYSTEM_ERROR = 500

REFUSAL_CODES: Mapping[Refusal, tuple[int, str]] = {
    Refusal.UNKNOWN_GOODS: (GOODS_NOT_FOUND, "商品不存在"),
    Refusal.OFF_SALE: (GOODS_NOT_FOUND, "商品已下架"),
    Refusal.PRICE_ABOVE_MAX: (PRICE_ABOVE_MAX, "商品价格高于最大金额"),
    Refusal.BAD_REQUEST: (BAD_ORDER, "下单参数错误"),
    Refusal.NOT_SUPPORTED: (BAD_ORDER, "该商品暂不支持此类订单"),
    Refusal.BAD_ACCOUNT: (BAD_ORDER, "充值账号格式错误"),
    Refusal.UNAVAILABLE: (ORDER_TIMEOUT, "下单超时, 请查询订单"),
}

# -- types of goods and orders (1 直充, 2 卡密) ------------------------------------------------
GOODS_TYPE = {GoodsKind.RECHARGE: 1, GoodsKind.CARD: 2}
ORDER_TYPE = GOODS_TYPE
STATUS_ON_SALE, STATUS_OFF_SALE = 1, 2
ORDER_STATUS = {PurchaseState.PROCESSING: 10, PurchaseState.SUCCEEDED: 20,
                PurchaseState.FAILED: 30}
ORDER_STATUS_SUCCEEDED = ORDER_STATUS[PurchaseState.SUCCEEDED]
#: ``refund_data.refund_status`` of an agreed refund (⚠ the documentation's example value).
REFUND_SUCCEEDED = 20

MAX_PAGE_SIZE = 100
MAX_ID = 64  # characters of an order or goods number we keep


class BadField(ValueError):
    """A request field is missing or of the wrong type (answered 1201 / the endpoint's code)."""


def envelope(code: int, msg: str, data: Any = None) -> bytes:
    """The standard's answer; ``data`` is left out of failures."""
    doc: dict[str, Any] = {"code": code, "msg": msg}
    if data is not None:
        doc["data"] = data
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


REFUND_ACK = json.dumps({"result": "success", "msg": "接收成功"}, ensure_ascii=False,
                        separators=(",", ":")).encode("utf-8")


def parse_body(body: bytes) -> dict[str, Any]:
    """The JSON object of a request (an empty body is ``{}``, as the standard allows)."""
    if not body.strip():
        return {}
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadField("the body is not JSON") from exc
    if not isinstance(doc, dict):
        raise BadField("the body is not a JSON object")
    return doc


def text_field(doc: Mapping[str, Any], name: str, *, required: bool = True,
               limit: int = MAX_ID) -> str | None:
    value = doc.get(name)
    if value is None or value == "":
        if required:
            raise BadField(f"{name} is required")
        return None
    if not isinstance(value, str):
        raise BadField(f"{name} must be a string")
    if len(value) > limit or not value.strip():
        raise BadField(f"{name} is not a valid value")
    return value


def int_field(doc: Mapping[str, Any], name: str, *, required: bool = True, low: int = 0,
              high: int = 10**12) -> int | None:
    value = doc.get(name)
    if value is None:
        if required:
            raise BadField(f"{name} is required")
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadField(f"{name} must be an integer")
    if not low <= value <= high:
        raise BadField(f"{name} is out of range")
    return value


def goods_kind(value: int | None) -> GoodsKind | None:
    """``goods_type`` / ``order_type`` 1 or 2 as a kind (None: not given)."""
    if value is None:
        return None
    for kind, number in GOODS_TYPE.items():
        if number == value:
            return kind
    raise BadField("goods_type must be 1 or 2")


def notify_url(doc: Mapping[str, Any]) -> str:
    url = text_field(doc, "notify_url", limit=2048)
    assert url is not None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise BadField("notify_url must be an http(s) address")
    return url


@dataclass(frozen=True)
class PurchaseFields:
    """The fields of ``order/purchase/create`` (and the shared ones of ``recharge/create``)."""

    order_no: str
    goods_no: str
    buy_quantity: int
    max_amount: int | None
    notify_url: str
    biz_order_no: str | None
    buyer_ip: str | None = None
    #: ``recharge/create``'s ``biz_content``: the account to credit, the game area / server.
    account: str | None = field(default=None, repr=False)
    game_area: str | None = None
    game_server: str | None = None
    game_name: str | None = None
    game_role: str | None = field(default=None, repr=False)


#: ``biz_content`` of ``recharge/create`` (创建直充订单): every field a string, all optional in
#: the documentation's table but ``account`` (a top-up without one cannot be served).
RECHARGE_TEXT = ("game_name", "game_role", "game_area", "game_server", "buyer_ip",
                 "buyer_area")


def purchase_fields(doc: Mapping[str, Any], *, recharge: bool = False) -> PurchaseFields:
    order_no = text_field(doc, "order_no")
    goods_no = text_field(doc, "goods_no")
    quantity = int_field(doc, "buy_quantity", low=1, high=10_000)
    max_amount = int_field(doc, "max_amount", required=False)
    url = notify_url(doc)
    biz = text_field(doc, "biz_order_no", required=False)
    for optional in ("product_id", "product_sku", "item_id"):
        int_field(doc, optional, required=False)
    assert order_no is not None
    assert goods_no is not None
    assert quantity is not None
    if not recharge:
        return PurchaseFields(order_no, goods_no, quantity, max_amount, url, biz)
    content = doc.get("biz_content")
    if not isinstance(content, dict):
        raise BadField("biz_content is required for a top-up")
    account = text_field(content, "account", limit=128)
    extra = {name: text_field(content, name, required=False, limit=128)
             for name in RECHARGE_TEXT}
    return PurchaseFields(order_no, goods_no, quantity, max_amount, url, biz,
                          buyer_ip=extra["buyer_ip"], account=account,
                          game_area=extra["game_area"], game_server=extra["game_server"],
                          game_name=extra["game_name"], game_role=extra["game_role"])


def goods_item(goods: Goods) -> dict[str, Any]:
    """One goods as ``goods/list`` and ``goods/detail`` give it."""
    return {
        "goods_no": goods.goods_no,
        "goods_type": GOODS_TYPE[goods.kind],
        "goods_name": goods.name,
        "price": goods.price_cents,
        "stock": goods.stock,
        "status": STATUS_ON_SALE if goods.on_sale else STATUS_OFF_SALE,
        "update_time": int(goods.updated_at.timestamp()),
    }


def goods_page(goods: Sequence[Goods], doc: Mapping[str, Any]) -> dict[str, Any]:
    """``goods/list``: keyword (name contains / goods number equals), type, one page."""
    keyword = doc.get("keyword") or ""
    if not isinstance(keyword, str):
        raise BadField("keyword must be a string")
    kind = goods_kind(int_field(doc, "goods_type", required=False, low=1, high=2))
    page_no = int_field(doc, "page_no", required=False, low=1, high=10**6) or 1
    size = int_field(doc, "page_size", required=False, low=1, high=MAX_PAGE_SIZE) or 50
    chosen = [g for g in goods
              if (kind is None or g.kind is kind)
              and (not keyword or keyword in g.name or keyword == g.goods_no)]
    start = (page_no - 1) * size
    return {"list": [goods_item(g) for g in chosen[start:start + size]], "count": len(chosen)}


def card_items(codes: Sequence[HandedCode]) -> list[dict[str, str]]:
    """``card_items``: a number / PIN pair goes in ``card_no`` and ``card_pwd``, a code with
    no separate PIN in ``card_pwd`` alone (the standard: 无卡号或者无法区分卡号和密码的,
    请使用card_pwd字段). The one place the codes are revealed: to build this request."""
    items: list[dict[str, str]] = []
    for code in codes:
        if code.pin is not None:
            items.append({"card_no": code.number.reveal(), "card_pwd": code.pin.reveal()})
        else:
            items.append({"card_pwd": code.number.reveal()})
    return items


def _seconds(moment: datetime | None) -> int:
    return int(moment.timestamp()) if moment is not None else 0


def order_data(view: PurchaseView, kind: GoodsKind = GoodsKind.CARD) -> dict[str, Any]:
    """The order as ``purchase/create`` and ``order/detail`` answer it."""
    data: dict[str, Any] = {
        "order_type": ORDER_TYPE[kind],
        "order_no": view.platform_order_id,
        "out_order_no": view.our_order_id,
        "order_status": ORDER_STATUS[view.state],
        "order_amount": view.total_cents,
        "order_time": _seconds(view.ordered_at),
        "end_time": _seconds(view.ended_at),
    }
    if view.state is PurchaseState.SUCCEEDED and kind is GoodsKind.CARD:
        data["card_items"] = card_items(view.codes)
    if view.state is PurchaseState.FAILED and view.reason:
        data["remark"] = view.reason[:200]
    return data


def callback_body(*, order_no: str, out_order_no: str, state: PurchaseState, end_time: int,
                  codes: Sequence[HandedCode] = (), remark: str | None = None,
                  kind: GoodsKind = GoodsKind.CARD) -> bytes:
    """The order callback (订单回调通知) posted to the order's ``notify_url``."""
    doc: dict[str, Any] = {"order_type": ORDER_TYPE[kind], "order_no": order_no,
                           "out_order_no": out_order_no, "order_status": ORDER_STATUS[state],
                           "end_time": end_time}
    if state is PurchaseState.SUCCEEDED and kind is GoodsKind.CARD:
        doc["card_items"] = card_items(codes)
    if remark:
        doc["remark"] = remark[:200]
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def acknowledged(body: bytes) -> bool:
    """Whether 闲管家 accepted a callback (``{"code": 0, ...}``)."""
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(doc, dict) and doc.get("code") == OK and not isinstance(
        doc.get("code"), bool)


#: 闲管家's goods callback address when a subscription names only its token (固定回调地址).
GOODS_NOTIFY_URL = "https://open.goofish.pro/api/open/callback/virtual/goods/notify/{token}"


def subscription_fields(doc: Mapping[str, Any], now: datetime) -> Subscription:
    """``goods/change/subscribe``: goods_type, goods_no, token, notify_url (the standard marks
    both required; a token alone means the fixed callback address)."""
    kind = goods_kind(int_field(doc, "goods_type", low=1, high=2))
    goods_no = text_field(doc, "goods_no")
    token = text_field(doc, "token", limit=128)
    assert kind is not None
    assert goods_no is not None
    assert token is not None
    url = notify_url(doc) if doc.get("notify_url") else GOODS_NOTIFY_URL.format(token=token)
    return Subscription(goods_no, kind, token, url, now)


def subscription_page(subs: Sequence[Subscription], doc: Mapping[str, Any]) -> dict[str, Any]:
    """``goods/change/subscribe/list``: optional goods_type, one page."""
    kind_value = doc.get("goods_type")
    kind = goods_kind(int_field(doc, "goods_type", required=False, low=1, high=2)) \
        if kind_value not in ("", None) else None
    page_no = int_field(doc, "page_no", required=False, low=1, high=10**6) or 1
    size = int_field(doc, "page_size", required=False, low=1, high=MAX_PAGE_SIZE) or 50
    chosen = [s for s in subs if kind is None or s.kind is kind]
    start = (page_no - 1) * size
    return {"list": [{"goods_type": GOODS_TYPE[s.kind], "goods_no": s.goods_no,
                      "subscribe_time": _seconds(s.subscribed_at), "token": s.token,
                      "notify_url": s.notify_url} for s in chosen[start:start + size]],
            "count": len(chosen)}


def goods_notice_body(goods: Goods) -> bytes:
    """The goods callback (商品回调通知): one item with price, stock and status."""
    item = {"goods_no": goods.goods_no, "goods_type": GOODS_TYPE[goods.kind],
            "price": goods.price_cents, "stock": goods.stock,
            "status": STATUS_ON_SALE if goods.on_sale else STATUS_OFF_SALE,
            "change_time": _seconds(goods.updated_at)}
    return json.dumps({"items": [item]}, ensure_ascii=False,
                      separators=(",", ":")).encode("utf-8")
