"""The pickup page's HTML: small, mobile-first, in Chinese and English, no external assets.

Every page is one self-contained document: inline CSS and (on the revealed page) a few lines
of inline JavaScript for the copy buttons, both allowed by hash in the Content-Security-Policy
so no other script can run. Pages are deterministic for their inputs; in particular the
neutral page is byte-for-byte the same for every "nothing here" answer, so it cannot tell an
unknown link from an expired one (it names no shop).

An order bought as a top-up (straight into the buyer's account, from a supplier) has no code
to show: its page shows each unit's status instead (:class:`TopupView`: the item, the account
masked, done / in progress / failed), never the supplier or its cost; an order with both
shows both.

A link page also shows what the shop file and the pools say (:class:`PageExtras`): the shop's
name, customer-service contact and footer, each pool's usage instructions (plain text, line
breaks kept by CSS), and the QR code of the page's own link (inline SVG, paths only). The page
works without JavaScript: the reveal is a form post, links are plain links, and the copy
buttons stay hidden until the script shows them.

Everything interpolated is escaped. This module must never render a plaintext code (nor a
redemption link, which carries one) except in :func:`revealed_page`, and never load anything
from another origin.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from robot.display import yuan

CSS = """
*{box-sizing:border-box}
body{margin:0;font:16px/1.5 -apple-system,BlinkMacSystemFont,"PingFang SC","Microsoft YaHei",
"Noto Sans CJK SC",sans-serif;background:#f4f5f7;color:#1d2129}
main{max-width:34rem;margin:0 auto;padding:1.25rem 1rem 3rem}
h1{font-size:1.3rem;margin:.25rem 0 1rem}
.en{display:block;font-size:.8em;color:#6b7280;font-weight:normal}
.card{background:#fff;border-radius:12px;padding:1rem;margin:0 0 1rem;
box-shadow:0 1px 3px rgba(0,0,0,.08)}
.meta{color:#4b5563;font-size:.9rem;margin:0 0 .75rem}
ul.codes{list-style:none;margin:0;padding:0}
ul.codes li{border-top:1px solid #eef0f3;padding:.75rem 0}
ul.codes li:first-child{border-top:0}
.item{font-size:.85rem;color:#6b7280}
.row{display:flex;align-items:center;gap:.5rem;margin-top:.25rem}
code{flex:1;font:1.05rem/1.4 ui-monospace,Menlo,Consolas,monospace;word-break:break-all;
background:#f6f7f9;border-radius:8px;padding:.5rem .6rem}
.label{font-size:.8rem;color:#6b7280;min-width:3.5rem}
button,.btn{font:inherit;border:0;border-radius:10px;cursor:pointer}
button.copy{background:#e8f0fe;color:#1a56db;padding:.45rem .8rem;font-size:.9rem}
button.primary{width:100%;background:#1a56db;color:#fff;padding:.85rem 1rem;font-size:1.05rem}
.note{font-size:.85rem;color:#6b7280;margin:.75rem 0 0}
label{display:block;margin:.75rem 0 .25rem;font-size:.95rem}
input{width:100%;font:inherit;padding:.7rem .75rem;border:1px solid #d1d5db;border-radius:10px;
background:#fff}
a{color:#1a56db}
[hidden]{display:none!important}
.shop{margin:0;font-size:.95rem;color:#4b5563;font-weight:600}
h2{font-size:1rem;margin:0 0 .5rem}
.howto .text{white-space:pre-line;margin:.25rem 0 .5rem}
.howto .item{margin-top:.75rem}
a.redeem{display:inline-block;background:#1a56db;color:#fff;padding:.45rem .9rem;
font-size:.9rem;text-decoration:none;border-radius:10px}
.qrcard{text-align:center}
.qrcard svg{display:block;width:10rem;height:10rem;margin:0 auto .25rem}
footer{font-size:.85rem;color:#6b7280;margin:1.5rem 0 0;text-align:center}
footer p{margin:.25rem 0}
.foot-text{white-space:pre-line}
ul.topups{list-style:none;margin:0;padding:0}
ul.topups li{border-top:1px solid #eef0f3;padding:.75rem 0}
ul.topups li:first-child{border-top:0}
.account{font:1.05rem/1.4 ui-monospace,Menlo,Consolas,monospace}
.state{display:inline-block;border-radius:999px;padding:.1rem .6rem;font-size:.85rem}
.state.done{background:#e3f6e8;color:#137333}
.state.in_progress{background:#fff4e0;color:#8a5300}
.state.failed{background:#fde8e8;color:#b42318}
""".strip()

COPY_JS = """
document.querySelectorAll("button[data-copy]").forEach(function(b){b.hidden=false});
document.addEventListener("click",function(e){
var b=e.target.closest?e.target.closest("[data-copy]"):null;if(!b)return;
var el=document.getElementById(b.getAttribute("data-copy"));if(!el)return;
var go=b.tagName==="A"?b.href:null;if(go)e.preventDefault();
var text=el.textContent,old=b.textContent;
function open(){if(go)window.open(go,"_blank","noopener,noreferrer")}
function done(){b.textContent=b.getAttribute("data-done");open();
setTimeout(function(){b.textContent=old},1500)}
function legacy(){var r=document.createRange();r.selectNodeContents(el);var s=window.getSelection();
s.removeAllRanges();s.addRange(r);try{document.execCommand("copy");done()}catch(_){open()}}
if(navigator.clipboard&&window.isSecureContext){navigator.clipboard.writeText(text).then(done,legacy)}
else{legacy()}});
""".strip()


def _sha256_source(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


CSP = (
    "default-src 'none'; "
    f"style-src {_sha256_source(CSS)}; "
    f"script-src {_sha256_source(COPY_JS)}; "
    "img-src data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)

#: Headers for every pickup page: never cached, never framed, and the URL (a key) never sent
#: as a referrer to another site. ``same-origin`` rather than ``no-referrer``: with the latter
#: browsers send ``Origin: null`` on the page's own form, which the reveal's origin check
#: could not tell from a foreign one.
HEADERS = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "X-Robots-Tag": "noindex, nofollow",
}


def _t(zh: str, en: str) -> str:
    """A bilingual label: Chinese first, English beneath it."""
    return f'{escape(zh)}<span class="en">{escape(en)}</span>'


_NEUTRAL_TEXT = _t("链接无效、已过期或已失效，或订单信息不匹配。",
                   "The link is invalid or has expired, or the order details did not match.")
_HELP_TEXT = _t("如需帮助，请联系店铺客服。",
                "If you need help, please contact the shop's customer service.")
_REOPEN_TEXT = _t("请重新打开提取链接后再试。", "Open your pickup link again and retry.")
_LOGGED_TEXT = _t("显示后视为已查收；每次查看都会被记录。",
                  "Once shown, the codes count as received; every view is logged.")
_KEEP_TEXT = _t("请妥善保管，勿泄露给他人。", "Keep them safe and share them with no one.")


@dataclass(frozen=True)
class ShopFace:
    """How a shop presents itself on its pickup pages (every field optional)."""

    display_name: str | None = None
    contact_text: str | None = None
    contact_url: str | None = None
    footer: str | None = None


def _layout(title: str, body: str, *, script: bool = False, shop: ShopFace | None = None) -> str:
    js = f"<script>{COPY_JS}</script>" if script else ""
    if shop is not None and shop.display_name:
        title = f"{shop.display_name} · {title}"
        body = f'<p class="shop">{escape(shop.display_name)}</p>{body}'
    return (
        '<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        '<meta name="referrer" content="same-origin">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head>"
        f"<body><main>{body}{_footer(shop)}</main>{js}</body></html>"
    )


def _external(url: str) -> str:
    """Attributes of a link that leaves the page: a new tab, nothing of ours sent along."""
    return f'href="{escape(url)}" target="_blank" rel="noopener noreferrer"'


def _footer(shop: ShopFace | None) -> str:
    if shop is None or not (shop.contact_text or shop.footer):
        return ""
    parts = []
    if shop.contact_text:
        text = escape(shop.contact_text)
        if shop.contact_url:
            web = shop.contact_url.lower().startswith(("https:", "http:"))
            attrs = _external(shop.contact_url) if web else f'href="{escape(shop.contact_url)}"'
            text = f'<a class="contact" {attrs}>{text}</a>'
        parts.append(f"<p>客服 Customer service: {text}</p>")
    if shop.footer:
        parts.append(f'<p class="foot-text">{escape(shop.footer)}</p>')
    return f"<footer>{''.join(parts)}</footer>"


def neutral_page(*, lookup_url: str | None) -> str:
    """The one answer for every link or lookup that opens nothing (``lookup_url``: an
    absolute link to the lookup form, when some shop offers it)."""
    more = (f'<p class="note"><a href="{escape(lookup_url)}">'
            f'{_t("按订单号查询", "Look up by order number")}</a></p>' if lookup_url else "")
    body = (
        f"<h1>{_t('未找到可提取的内容', 'Nothing to show here')}</h1>"
        f'<div class="card"><p>{_NEUTRAL_TEXT}</p>'
        f'<p class="note">{_HELP_TEXT}</p>{more}</div>'
    )
    return _layout("提取卡密 / Pickup", body)


def busy_page() -> str:
    body = (f"<h1>{_t('请求过于频繁', 'Too many requests')}</h1>"
            f'<div class="card"><p>{_t("请稍后再试。", "Please try again a little later.")}</p>'
            "</div>")
    return _layout("提取卡密 / Pickup", body)


def refused_page() -> str:
    body = (f"<h1>{_t('请从提取页面操作', 'Please use the pickup page')}</h1>"
            f'<div class="card"><p>{_REOPEN_TEXT}</p></div>')
    return _layout("提取卡密 / Pickup", body)


@dataclass(frozen=True)
class CodeView:
    """One code as a page shows it: the item it belongs to and its (masked or plain) parts."""

    item: str
    card_no: str
    password: str | None = None
    #: The code's expiry as the buyer reads it (the shops' time zone, to the second).
    expires: str | None = None
    #: Revealed codes only: the redemption link, and whether it takes the code (else the
    #: page copies the code, then opens the link).
    redeem_url: str | None = None
    redeem_takes_code: bool = True


@dataclass(frozen=True)
class Instructions:
    """A pool's usage instructions; ``items``: the items of this order that use them."""

    items: tuple[str, ...]
    zh: str | None
    en: str | None


_COPY_DONE = 'data-done="已复制 Copied"'
_PASTE_NOTE = _t("请在兑换页粘贴卡密。", "Paste the code on the redemption page.")


def _redeem(c: CodeView, ident: str) -> str:
    if c.redeem_url is None:
        return ""
    label = "去兑换 Redeem"
    if c.redeem_takes_code:
        return f'<div class="row"><a class="redeem" {_external(c.redeem_url)}>{label}</a></div>'
    return (f'<div class="row"><a class="redeem" {_external(c.redeem_url)} '
            f'data-copy="{ident}" {_COPY_DONE}>{label}</a></div>'
            f'<p class="note">{_PASTE_NOTE}</p>')


def _codes_list(codes: Sequence[CodeView], *, copy: bool) -> str:
    items = []
    for i, c in enumerate(codes):
        parts = [("卡号 No.", c.card_no, f"c{i}n")]
        if c.password is not None:
            parts.append(("密码 PIN", c.password, f"c{i}p"))
        rows = []
        for label, value, ident in parts:
            # Hidden until the page's script runs: without JavaScript it could not copy.
            button = (f'<button type="button" class="copy" data-copy="{ident}" '
                      f"{_COPY_DONE} hidden>复制 Copy</button>" if copy else "")
            label_html = (f'<span class="label">{escape(label)}</span>'
                          if c.password is not None else "")
            rows.append(f'<div class="row">{label_html}<code id="{ident}">{escape(value)}</code>'
                        f"{button}</div>")
        if c.expires is not None:
            rows.append(f'<div class="row expires">{_t("有效期至", "Valid until")} '
                        f"{escape(c.expires)}</div>")
        if copy:
            rows.append(_redeem(c, f"c{i}n"))
        items.append(f'<li><div class="item">{escape(c.item)}</div>{"".join(rows)}</li>')
    return f'<ul class="codes">{"".join(items)}</ul>'


def _instructions(blocks: Sequence[Instructions]) -> str:
    if not blocks:
        return ""
    parts = []
    for block in blocks:
        if len(blocks) > 1:
            parts.append(f'<p class="item">{escape(" / ".join(block.items))}</p>')
        for text, lang in ((block.zh, "zh-CN"), (block.en, "en")):
            if text:
                parts.append(f'<p class="text" lang="{lang}">{escape(text)}</p>')
    return (f'<div class="card howto"><h2>{_t("使用说明", "How to use")}</h2>'
            f'{"".join(parts)}</div>')


def _qr_card(qr_svg: str | None) -> str:
    """The page's own link as a QR code (``qr_svg`` from :func:`robot.http.qr.svg`, trusted
    markup: paths only)."""
    if qr_svg is None:
        return ""
    return (f'<div class="card qrcard">{qr_svg}<p class="note">'
            f'{_t("用手机扫码打开本页", "Scan to open this page on your phone")}</p></div>')


@dataclass(frozen=True)
class TopupView:
    """One unit of a top-up as the buyer sees it: the item, the account it goes to (masked:
    ``138****1234``) and how far it is: ``done``, ``in_progress`` or ``failed``."""

    item: str
    account: str
    state: str
    face_value_cents: int | None = None


def face_value(cents: int | None) -> str:
    """A face value as the buyer reads it: ``50元``, ``9.9元``; empty when unknown."""
    if cents is None:
        return ""
    return yuan(cents).rstrip("0").rstrip(".") + "元"


#: What the buyer reads for each top-up state.
TOPUP_STATES = {
    "done": ("充值成功", "Topped up"),
    "in_progress": ("充值中", "In progress"),
    "failed": ("充值失败", "Failed"),
}
_TOPUP_FAILED_NOTE = _t("充值未成功，请联系店铺客服退款或重试。",
                        "The top-up did not go through; please contact the shop for a "
                        "refund or a retry.")
_TOPUP_WAIT_NOTE = _t("充值处理中，请稍后刷新本页。",
                      "Your top-up is being processed; refresh this page in a little while.")


def _topups_card(topups: Sequence[TopupView]) -> str:
    """Each top-up unit with its status; a note when one is still running or failed."""
    if not topups:
        return ""
    items = []
    for t in topups:
        zh, en = TOPUP_STATES.get(t.state, TOPUP_STATES["in_progress"])
        state = t.state if t.state in TOPUP_STATES else "in_progress"
        face = face_value(t.face_value_cents)
        account = (f'<span class="account">{escape(t.account)}</span>' if t.account else "") + (
            f'<span class="face">{" · " if t.account else ""}{escape(face)}</span>'
            if face else "")
        items.append(f'<li><div class="item">{escape(t.item)}</div>'
                     f'<div class="row"><span class="state {state}">{escape(zh)} '
                     f'{escape(en)}</span>{account}</div></li>')
    notes = "".join(
        f'<p class="note">{note}</p>'
        for state, note in (("failed", _TOPUP_FAILED_NOTE), ("in_progress", _TOPUP_WAIT_NOTE))
        if any(t.state == state for t in topups))
    return (f'<div class="card topups-card"><h2>{_t("充值", "Top-up")}</h2>'
            f'<ul class="topups">{"".join(items)}</ul>{notes}</div>')


@dataclass(frozen=True)
class PageExtras:
    """What a link page shows besides the codes: the shop, the pools' instructions, the QR,
    and the order's top-ups."""

    shop: ShopFace | None = None
    instructions: Sequence[Instructions] = ()
    qr_svg: str | None = None
    topups: Sequence[TopupView] = ()


def _order_meta(platform_order_id: str, count: int) -> str:
    return (f'<p class="meta">订单号 Order: {escape(platform_order_id)} · '
            f"{count} 个卡密 code(s)</p>")


def topup_page(platform_order_id: str, extras: PageExtras) -> str:
    """An order with top-ups and no code: each top-up's status (nothing to reveal)."""
    body = (
        f"<h1>{_t('您的充值', 'Your top-up')}</h1>"
        f'<p class="meta">订单号 Order: {escape(platform_order_id)}</p>'
        f"{_topups_card(extras.topups)}{_qr_card(extras.qr_svg)}"
    )
    return _layout("充值 / Top-up", body, shop=extras.shop)


def masked_page(platform_order_id: str, codes: Sequence[CodeView], *, csrf: str,
                action: str, extras: PageExtras | None = None) -> str:
    """The order with its codes masked and a button to reveal them (posting to ``action``);
    without codes, its top-ups (:func:`topup_page`)."""
    extras = extras or PageExtras()
    if not codes:
        return topup_page(platform_order_id, extras)
    body = (
        f"<h1>{_t('您的卡密', 'Your codes')}</h1>"
        f'<div class="card">{_order_meta(platform_order_id, len(codes))}'
        f"{_codes_list(codes, copy=False)}</div>"
        f'<form method="post" action="{escape(action)}" class="card">'
        f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
        f'<button type="submit" class="primary">{_t("显示完整卡密", "Show full codes")}'
        "</button>"
        f'<p class="note">{_LOGGED_TEXT}</p></form>'
        f"{_topups_card(extras.topups)}"
        f"{_instructions(extras.instructions)}{_qr_card(extras.qr_svg)}"
    )
    return _layout("提取卡密 / Pickup", body, shop=extras.shop)


def revealed_page(platform_order_id: str, codes: Sequence[CodeView], *,
                  extras: PageExtras | None = None) -> str:
    extras = extras or PageExtras()
    body = (
        f"<h1>{_t('您的卡密', 'Your codes')}</h1>"
        f'<div class="card">{_order_meta(platform_order_id, len(codes))}'
        f"{_codes_list(codes, copy=True)}"
        f'<p class="note">{_KEEP_TEXT}</p></div>'
        f"{_topups_card(extras.topups)}"
        f"{_instructions(extras.instructions)}{_qr_card(extras.qr_svg)}"
    )
    return _layout("提取卡密 / Pickup", body, script=True, shop=extras.shop)


#: Per check: its label (``{n}``: the suffix length) and what the input looks like.
CHECK_LABELS = {
    "paid_at": ("付款时间（见订单详情，精确到分钟）",
                "Time of payment, as your order details show it (to the minute)"),
    "buyer_id_suffix": ("买家账号后{n}位", "Last {n} characters of your buyer ID"),
    "paid_amount": ("实付金额（元）", "Amount paid (CNY)"),
}
CHECK_INPUTS = {
    "paid_at": 'placeholder="2026-12-05 14:03" inputmode="text"',
    "buyer_id_suffix": "",
    "paid_amount": 'placeholder="29.90" inputmode="decimal"',
}


def lookup_page(*, checks: Sequence[str], suffix_length: int, shop: str | None,
                required: bool = True) -> str:
    """The lookup form with one input per check (named after the check); ``required=False``
    when the form serves several shops asking different checks (each uses its own)."""
    fields = []
    for name in checks:
        zh, en = CHECK_LABELS.get(name, (name, name))
        label = _t(zh.format(n=suffix_length), en.format(n=suffix_length))
        attrs = " ".join(a for a in (CHECK_INPUTS.get(name, ""), "required" if required
                                     else "") if a)
        fields.append(f'<label for="{escape(name)}">{label}</label>'
                      f'<input id="{escape(name)}" name="{escape(name)}" maxlength="64" '
                      f'autocomplete="off" {attrs}>')
    note = ("" if required else
            f'<p class="note">{_t("请填写店铺要求的验证信息。", "Fill in what the shop asks for.")}'
            "</p>")
    hidden = (f'<input type="hidden" name="shop" value="{escape(shop)}">' if shop else "")
    body = (
        f"<h1>{_t('查询卡密', 'Find your codes')}</h1>"
        '<form method="post" action="" class="card">'
        f'<label for="order">{_t("订单号", "Order number")}</label>'
        '<input id="order" name="order" required maxlength="64" autocomplete="off">'
        f'{"".join(fields)}{note}'
        f'{hidden}<p></p><button type="submit" class="primary">{_t("查询", "Look up")}</button>'
        "</form>"
    )
    return _layout("查询卡密 / Find your codes", body)
