"""A shop's buyer notifications (``notify:`` in the shop file): which channels, through which
notifier plugin, with which templates. Off unless the shop file turns a channel on::

    notify:
      language: zh                 # zh | en: the templates the buyer gets
      email:
        notifier: smtp             # an entry point in robot.notifiers
        config: {...}              # checked by the notifier's own model
        templates:                 # optional; built-in zh and en texts otherwise
          zh: {subject: "订单 {order_id} 已发货", body: "..."}
      sms:
        notifier: aliyun_sms
        config: {...}
        params: {order: "{order_id}", link: "{pickup_url}"}   # the SMS template's variables
        include_codes: false       # true: the plaintext codes may go in ({codes})

A message carries the pickup link; plaintext codes (``{codes}``) only where the channel says
``include_codes: true``. The plugin's config is validated by :func:`validate_channels`,
each problem naming file, shop and field (``notify.sms.config.sign_name: Field required``).
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SerializeAsAny, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from connectors.config import BASE_DIR
from connectors.notifier import Channel, NotifierFactory
from robot.config.problems import Problems, did_you_mean, explain
from robot.config.types import StrictModel

Language = Literal["zh", "en"]
#: What a notification template may say. ``{codes}`` is the plaintext codes: only allowed
#: where the channel opted in (``include_codes: true``).
PLACEHOLDERS = frozenset({"order_id", "pickup_url", "title", "quantity", "count", "shop",
                          "masked_codes", "codes"})
PLAINTEXT = "codes"

DEFAULT_MAIL: Mapping[str, Mapping[str, str]] = {
    "zh": {"subject": "您的订单 {order_id} 已发货",
           "body": "您好，\n\n您的订单 {order_id}（{title} × {quantity}）已发货。\n"
                   "请打开下面的链接领取卡密（链接仅供本人使用，请勿转发）：\n{pickup_url}\n\n"
                   "如有问题，请联系店铺客服。\n"},
    "en": {"subject": "Your order {order_id} is ready",
           "body": "Hello,\n\nyour order {order_id} ({title} x {quantity}) is ready.\n"
                   "Open this link to get your code(s) (it is for you only: do not forward "
                   "it):\n{pickup_url}\n\nIf anything is wrong, write to the shop's customer "
                   "service.\n"},
}
DEFAULT_SMS_PARAMS: Mapping[str, str] = {"order": "{order_id}", "link": "{pickup_url}"}


def placeholders(template: str) -> set[str]:
    """The placeholders ``template`` uses (a ValueError for a broken template)."""
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


def _check_templates(texts: Mapping[str, str], include_codes: bool) -> None:
    for where, text in texts.items():
        try:
            used = placeholders(text)
        except ValueError as exc:
            raise PydanticCustomError(
                "template_syntax", "{where}: bad template: {reason} (write {{{{ and }}}} for "
                "literal braces)", {"where": where, "reason": str(exc)}) from exc
        unknown = sorted(used - PLACEHOLDERS)
        if unknown:
            raise PydanticCustomError(
                "template_placeholder", "{where}: unknown placeholder {unknown}; use {allowed}",
                {"where": where, "unknown": ", ".join("{" + u + "}" for u in unknown),
                 "allowed": ", ".join("{" + a + "}" for a in sorted(PLACEHOLDERS))})
        if PLAINTEXT in used and not include_codes:
            raise PydanticCustomError(
                "plaintext_codes", "{where}: {{codes}} puts the plaintext codes in the message; "
                "the shop must opt in with include_codes: true (the pickup link is the safe "
                "default)", {"where": where})


class MailTemplate(StrictModel):
    subject: str = Field(min_length=1, max_length=200)
    body: str = Field(min_length=1)


class ChannelFile(StrictModel):
    """One channel as written: the notifier plugin and its raw config."""

    enabled: bool = True
    notifier: str = Field(min_length=1)
    config: dict[str, Any] = Field(default_factory=dict)
    include_codes: bool = False


class EmailFile(ChannelFile):
    templates: dict[Language, MailTemplate] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _templates_ok(self) -> EmailFile:
        _check_templates({f"templates.{lang}.{part}": getattr(t, part)
                          for lang, t in self.templates.items()
                          for part in ("subject", "body")}, self.include_codes)
        return self

    def mail(self, language: str) -> MailTemplate:
        """The shop's template for ``language`` (or the built-in one)."""
        for lang, mail in self.templates.items():
            if lang == language:
                return mail
        return MailTemplate(**DEFAULT_MAIL[language])


class SmsFile(ChannelFile):
    params: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_SMS_PARAMS))

    @model_validator(mode="after")
    def _params_ok(self) -> SmsFile:
        if not self.params:
            raise PydanticCustomError("sms_params", "params: the SMS template's variables, "
                                      "e.g. {{order: '{{order_id}}', link: '{{pickup_url}}'}}")
        _check_templates({f"params.{k}": v for k, v in self.params.items()}, self.include_codes)
        return self


class NotifyFile(StrictModel):
    """``notify:`` as written (see the module)."""

    language: Language = "zh"
    email: EmailFile | None = None
    sms: SmsFile | None = None

    def channels(self) -> dict[Channel, ChannelFile]:
        found: dict[Channel, ChannelFile] = {}
        if self.email is not None and self.email.enabled:
            found[Channel.EMAIL] = self.email
        if self.sms is not None and self.sms.enabled:
            found[Channel.SMS] = self.sms
        return found


class NotifyChannel(StrictModel):
    """One channel, resolved: the notifier's name and its validated config."""

    notifier: str
    config: SerializeAsAny[BaseModel]
    spec: SerializeAsAny[ChannelFile]


class NotifyConfig(StrictModel):
    """A shop's notifications, resolved (no channel: the shop notifies nobody)."""

    language: Language = "zh"
    channels: dict[Channel, NotifyChannel] = Field(default_factory=dict)


def validate_channels(raw: Any, notify: NotifyFile | None, path: Path, where: str,
                      problems: Problems, notifiers: Mapping[str, NotifierFactory],
                      load_errors: Mapping[str, str], *, pickup_enabled: bool,
                      ) -> NotifyConfig | None:
    """Each enabled channel's plugin config checked by its notifier; None with the problems
    added when something is wrong."""
    if notify is None:
        return None
    before = len(problems.lines)
    resolved: dict[Channel, NotifyChannel] = {}
    for channel, spec in notify.channels().items():
        field = f"notify.{channel.value}"
        factory = _factory(spec.notifier, channel, field, where, problems, notifiers,
                           load_errors)
        if not pickup_enabled and not spec.include_codes:
            problems.add(where, f"{field}: the message carries the pickup link, but "
                         "pickup.enabled is false: turn the pickup page on (or opt in to "
                         "plaintext codes with include_codes: true)")
        if factory is None:
            continue
        raw_config = ((raw or {}).get(channel.value) or {}).get("config") or {}
        model = factory.config_model
        try:
            config = model.model_validate(raw_config, context={BASE_DIR: path.parent})
        except ValidationError as exc:
            for line in explain(exc, model, raw_config, (*field.split("."), "config")):
                problems.add(where, line)
            continue
        # The raw config (secrets as written) is not kept: only the validated one, whose
        # secrets print as stars.
        resolved[channel] = NotifyChannel(notifier=spec.notifier, config=config,
                                          spec=spec.model_copy(update={"config": {}}))
    if len(problems.lines) > before:
        return None
    return NotifyConfig(language=notify.language, channels=resolved)


def _factory(name: str, channel: Channel, field: str, where: str, problems: Problems,
             notifiers: Mapping[str, NotifierFactory],
             load_errors: Mapping[str, str]) -> NotifierFactory | None:
    factory = notifiers.get(name)
    if factory is None:
        if name in load_errors:
            problems.add(where, f"{field}.notifier: the {name!r} notifier failed to load: "
                         f"{load_errors[name]}")
        else:
            known = sorted(n for n, f in notifiers.items() if f.channel == channel)
            problems.add(where, f"{field}.notifier: unknown notifier {name!r}"
                         f"{did_you_mean(name, known)}; registered for {channel.value}: "
                         f"{', '.join(known) or 'none'}")
        return None
    if factory.channel != channel:
        problems.add(where, f"{field}.notifier: {name!r} sends {factory.channel.value}, not "
                     f"{channel.value}")
        return None
    return factory
