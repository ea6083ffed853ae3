"""Juhe's (聚合数据) mobile top-up protocol: endpoints, signatures, codes and states.

Juhe resells Ofpay (欧飞) mobile top-ups over plain HTTP: GET or form POST, answers as JSON
``{"reason": str, "result": ..., "error_code": int}`` with ``error_code == 0`` for success.
One module for both sides (the client signs, the fake verifies) so the two agree on the
wire; the tests check the signatures against an independent implementation.

Signatures (MD5, lowercase hex, over plain concatenation, no separators):

* placing an order (``onlineorder``): ``md5(OpenID + key + phoneno + cardnum + orderid)``;
* the balance (``yue``): ``md5(OpenID + key + timestamp)``;
* Juhe's callback to us: ``md5(key + sporder_id + orderid)`` -- it covers the two order
  numbers only, **not** the state ``sta``.

``game_state`` (query, order answer): ``0`` processing, ``1`` succeeded, ``9`` failed
(refunded). Juhe's own rule: a network error, or ``error_code`` 10014 (system error), on
placing means the order may exist: query it, never treat it as failed.
"""

from __future__ import annotations

import hashlib
import re
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Final

#: Juhe's real host (the client's default ``base_url``).
DEFAULT_BASE_URL: Final = "http://op.juhe.cn"
TELCHECK: Final = "/ofpay/mobile/telcheck"
TELQUERY: Final = "/ofpay/mobile/telquery"
ONLINEORDER: Final = "/ofpay/mobile/onlineorder"
ORDERSTA: Final = "/ofpay/mobile/ordersta"
YUE: Final = "/ofpay/mobile/yue"

#: The face values (yuan) Juhe's mobile top-up takes as ``cardnum``.
FACE_VALUES: Final = (10, 20, 30, 50, 100, 200, 300, 500)
#: Our product ids: ``mobile-<face value in yuan>``.
PRODUCT_PREFIX: Final = "mobile-"

#: ``orderid``: "商家订单号，8-32位字母数字组合".
ORDER_ID = re.compile(r"[A-Za-z0-9]{8,32}")
#: A mainland mobile number.
PHONE = re.compile(r"1[3-9][0-9]{9}")

# error_code values (comments: what Juhe's ``reason`` says)
OK: Final = 0
BAD_KEY: Final = 10001  # 错误的请求KEY
NO_PERMISSION: Final = 10002  # 该KEY无请求权限
KEY_EXPIRED: Final = 10003  # KEY过期
SYSTEM_ERROR: Final = 10014  # 系统内部异常 -- query, never failed
MAINTENANCE: Final = 10020  # 接口维护
NOT_ALLOWED: Final = 208501  # 不允许充值的手机号码及金额 (off the shelf for this number)
PRODUCT_QUERY_FAILED: Final = 208502  # 请求手机号和面值查询商品信息失败，请重试
BAD_PHONE: Final = 208505  # 错误的手机号码
BAD_AMOUNT: Final = 208506  # 错误的充值金额
BAD_SIGN: Final = 208508  # 校验值sign错误
DUPLICATE_ORDER: Final = 208509  # 商家订单号重复
ORDER_NOT_FOUND: Final = 208510  # 订单号不存在
BAD_ORDER_ID: Final = 208511  # 错误的商家订单号
REFUSED: Final = 208513  # 订单无效/受理失败
LOW_BALANCE: Final = 208514  # 账户余额不足

#: Codes that mean our credentials (key, OpenID) are wrong: fatal, nothing bought.
AUTH_CODES: Final = frozenset({BAD_KEY, NO_PERMISSION, KEY_EXPIRED, BAD_SIGN})
#: Codes on placing that mean "definitely not placed, nothing charged".
REFUSAL_CODES: Final = frozenset({NOT_ALLOWED, BAD_PHONE, BAD_AMOUNT, BAD_ORDER_ID, REFUSED,
                                  LOW_BALANCE})

GAME_PROCESSING: Final = "0"
GAME_SUCCESS: Final = "1"
GAME_FAILED: Final = "9"


def md5_hex(text: str) -> str:
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def order_sign(openid: str, key: str, phone: str, cardnum: str, orderid: str) -> str:
    """``onlineorder``'s ``sign``: md5(OpenID + key + phoneno + cardnum + orderid)."""
    return md5_hex(openid + key + phone + cardnum + orderid)


def balance_sign(openid: str, key: str, timestamp: str) -> str:
    """``yue``'s ``sign``: md5(OpenID + key + timestamp)."""
    return md5_hex(openid + key + timestamp)


def callback_sign(key: str, sporder_id: str, orderid: str) -> str:
    """The callback's ``sign``: md5(key + sporder_id + orderid)."""
    return md5_hex(key + sporder_id + orderid)


def product_id(face_value: int) -> str:
    return f"{PRODUCT_PREFIX}{face_value}"


def face_value(product: str) -> int | None:
    """The face value (yuan) a product id names, or None for a product Juhe does not sell."""
    if not product.startswith(PRODUCT_PREFIX):
        return None
    digits = product.removeprefix(PRODUCT_PREFIX)
    if not digits.isdigit() or digits.startswith("0") or int(digits) not in FACE_VALUES:
        return None
    return int(digits)


def yuan_to_cents(value: object) -> int:
    """Juhe's money (``"49.850"``, ``49.85``) in integer cents; ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("not an amount")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError("not an amount") from None
    if not amount.is_finite() or amount < 0 or amount > 10_000_000:
        raise ValueError("amount out of range")
    return int((amount * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def cents_to_yuan(cents: int) -> str:
    """Cents as Juhe writes money: three decimals (``"49.850"``)."""
    return f"{Decimal(cents) / 100:.3f}"
