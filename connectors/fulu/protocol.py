"""What both sides of the Fulu gateway share: method names, codes, states, times and money.

Facts (PLATFORMS.md §8.1): one gateway ``POST /api/getway`` with JSON bodies carrying
``app_key, method, timestamp, version "2.0", format "json", charset "utf-8", sign_type "md5",
app_auth_token, biz_content`` (a JSON *string*) and ``sign``; answers
``{"code", "message", "result" (a JSON string), "sign"}`` with ``code == 0`` for accepted;
order states ``untreated | processing | success | failed``; ``order_type`` 1 话费, 2 流量,
3 卡密, 4 直充. Confirmed in public SDK code (Go cgghui/recharge_library supplier/fulu;
PHP lun324/open-api-sdk-php, songjian/fulusdk).

The error codes other than 0 are **assumptions of our fake** (⚠): 3000 "外部订单号已存在" is seen
in a public client of Fulu's v1 API, and 3001-3005/3008 as "this product cannot be bought now"
in the Go client, without their texts. A code the client does not know is read as an unknown
outcome (query), never as a failure.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

GATEWAY_PATH = "/api/getway"  # sic: Fulu's own spelling
VERSION = "2.0"
#: Fulu's wall clock (timestamps in requests, order and callback times).
CHINA = timezone(timedelta(hours=8), "Asia/Shanghai")
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"

DIRECT_ADD = "fulu.order.direct.add"
MOBILE_ADD = "fulu.order.mobile.add"
CARD_ADD = "fulu.order.card.add"
ORDER_GET = "fulu.order.info.get"
GOODS_LIST = "fulu.goods.list.get"
GOODS_INFO = "fulu.goods.info.get"
STOCK_CHECK = "fulu.goods.stock.check"
USER_INFO = "fulu.user.info.get"
PLACE_METHODS = frozenset({DIRECT_ADD, MOBILE_ADD, CARD_ADD})
METHODS = PLACE_METHODS | {ORDER_GET, GOODS_LIST, GOODS_INFO, STOCK_CHECK, USER_INFO}

# Answer codes (⚠ assumptions, see the module docstring).
OK = 0
SYSTEM_BUSY = 1000
BAD_APP_KEY = 1001
BAD_SIGN = 1002
BAD_TIMESTAMP = 1003
NO_SUCH_METHOD = 1004
BAD_PARAMETER = 2001
ORDER_EXISTS = 3000
NO_SUCH_PRODUCT = 3001
OFF_SHELF = 3002
OUT_OF_STOCK = 3003
PRICE_ABOVE_LIMIT = 3004
BAD_ACCOUNT = 3005
INSUFFICIENT_BALANCE = 3008
NO_SUCH_ORDER = 5000

MESSAGES = {
    OK: "接口调用成功",
    SYSTEM_BUSY: "系统繁忙，请稍后再试",
    BAD_APP_KEY: "app_key不存在或已停用",
    BAD_SIGN: "签名验证失败",
    BAD_TIMESTAMP: "时间戳已过期",
    NO_SUCH_METHOD: "method不存在",
    BAD_PARAMETER: "参数错误",
    ORDER_EXISTS: "外部订单号已存在",
    NO_SUCH_PRODUCT: "商品不存在",
    OFF_SHELF: "商品已下架",
    OUT_OF_STOCK: "商品库存不足",
    PRICE_ABOVE_LIMIT: "商品价格高于限价",
    BAD_ACCOUNT: "充值账号格式错误",
    INSUFFICIENT_BALANCE: "账户余额不足",
    NO_SUCH_ORDER: "订单不存在",
}

#: Codes that mean "not placed, and will not be": the only ones read as a failed purchase.
DEFINITE_REFUSALS = frozenset({BAD_PARAMETER, NO_SUCH_PRODUCT, OFF_SHELF, OUT_OF_STOCK,
                               PRICE_ABOVE_LIMIT, BAD_ACCOUNT, INSUFFICIENT_BALANCE})
#: Codes that mean our credentials are refused (Fatal: a person must fix the config).
AUTH_REFUSALS = frozenset({BAD_APP_KEY, BAD_SIGN})

STATES = ("untreated", "processing", "success", "failed")
ORDER_TYPE_MOBILE, ORDER_TYPE_CARD, ORDER_TYPE_DIRECT = 1, 3, 4


def fulu_time(moment: datetime) -> str:
    """``moment`` as Fulu writes times (Beijing time, ``yyyy-MM-dd HH:mm:ss``)."""
    return moment.astimezone(CHINA).strftime(TIME_FORMAT)


def parse_fulu_time(text: str) -> datetime:
    """A Fulu time as aware UTC; ValueError when it is not one."""
    return datetime.strptime(text, TIME_FORMAT).replace(tzinfo=CHINA).astimezone(UTC)


def yuan(cents: int) -> str:
    """Cents as Fulu writes prices in callbacks (``"46.3000"``)."""
    return f"{Decimal(cents) / 100:.4f}"


def cents(value: object) -> int:
    """A Fulu price (number or decimal text, in yuan) as whole cents; ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("a price is a number")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError("a price is a number") from None
    if not amount.is_finite() or amount < 0 or amount > 10_000_000:
        raise ValueError("a price is a non-negative amount of yuan")
    return int((amount * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))
