"""``robot fake aliyun-sms``: Aliyun SMS's fake on loopback, with its test key and templates."""

from __future__ import annotations

import click

from connectors.aliyunsms.fake import (
    TEST_KEY_ID,
    TEST_KEY_SECRET,
    TEST_SIGN_NAME,
    AliyunSmsFakeState,
    make_app,
)
from connectors.fakecli import (
    announce,
    clock_offset_option,
    json_option,
    listen_on_loopback,
    loopback_options,
    serve_until_interrupted,
)


@click.command("aliyun-sms")
@loopback_options
@clock_offset_option
@json_option
@click.option("--access-key-id", default=TEST_KEY_ID, show_default=True,
              help="The AccessKeyId it accepts.")
@click.option("--access-key-secret", default=TEST_KEY_SECRET, show_default=True,
              help="The AccessKeySecret it verifies signatures with.")
@click.option("--sign-name", default=TEST_SIGN_NAME, show_default=True,
              help="The approved signature name (签名).")
def aliyun_sms_fake(host: str, port: int, clock_offset: float, as_json: bool,
                    access_key_id: str, access_key_secret: str, sign_name: str) -> None:
    """Serve a fake of Aliyun SMS SendSms (loopback only)."""
    state = AliyunSmsFakeState(access_key_id=access_key_id,
                               access_key_secret=access_key_secret, sign_names=(sign_name,),
                               clock_offset_seconds=clock_offset)
    sock, url = listen_on_loopback(host, port)
    info = {"url": url, "endpoint": url, "access_key_id": access_key_id,
            "access_key_secret": access_key_secret, "sign_name": sign_name,
            "templates": {code: text for code, (_v, text) in state.templates.items()}}
    announce(info, title="Aliyun SMS fake (test credentials, never real ones):",
             shown=("endpoint", "access_key_id", "access_key_secret", "sign_name"),
             more=state.banner(url), as_json=as_json)
    serve_until_interrupted(make_app(state), sock)
