"""Fulu's signature and card cipher, checked against vectors made outside this code: the MD5
and the sort by the shell's ``sort``/``md5sum`` (C locale), the ciphertexts by ``openssl enc
-aes-256-ecb``, and a second signer written here from the spec."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import pytest

from connectors.fulu.fake_state import TEST_APP_SECRET
from connectors.fulu.sign import (
    CardCipherError,
    canonical_json,
    decrypt_card,
    encrypt_card,
    sign_params,
    sign_text,
    split_signed,
    verify_signed,
)

GOLDEN_TEXT = '{"app_key":"k","biz_content":"{\\"customer_order_no\\":\\"A1\\"}",' \
              '"method":"fulu.order.info.get"}'
GOLDEN_SIGN = "a74b8ce56b67fa6bfbe0b98bdd0f795f"  # printf | fold -w1 | LC_ALL=C sort | md5sum


def second_signer(text: str, secret: str) -> str:
    """The spec again, another way: count the characters, emit them in code-point order."""
    counts = Counter(text)
    ordered = "".join(ch * counts[ch] for ch in sorted(counts, key=ord))
    return hashlib.md5((ordered + secret).encode(), usedforsecurity=False).hexdigest()


def test_sign_matches_the_shell_computed_golden_vector() -> None:
    """The signature of a fixed text is the MD5 the shell computes from its sorted characters."""
    assert sign_text(GOLDEN_TEXT, TEST_APP_SECRET) == GOLDEN_SIGN


def test_request_sign_is_over_compact_unescaped_json_without_sign() -> None:
    """A request's sign covers its JSON without ``sign``: key order is irrelevant, Chinese
    text and slashes are signed unescaped, as PHP json_encode(…, 320) writes them."""
    params = {"method": "fulu.order.direct.add", "app_key": "i4/+k",
              "biz_content": canonical_json({"charge_account": "张三/1"}), "sign": "x"}
    text = json.dumps({k: v for k, v in params.items() if k != "sign"},
                      ensure_ascii=False, separators=(",", ":"))
    assert "张三/1" in text
    assert sign_params(params, TEST_APP_SECRET) == second_signer(text, TEST_APP_SECRET)
    reordered = dict(reversed(list(params.items())))
    assert sign_params(reordered, TEST_APP_SECRET) == sign_params(params, TEST_APP_SECRET)
    escaped = json.dumps({k: v for k, v in params.items() if k != "sign"})
    assert second_signer(escaped, TEST_APP_SECRET) != sign_params(params, TEST_APP_SECRET)


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_a_signed_text_verifies_wherever_its_sign_member_sits(where: str) -> None:
    """The sign member may sit anywhere; the text without it is what was signed."""
    members = ['"a":"1"', '"b":2']
    sign = second_signer("{" + ",".join(members) + "}", TEST_APP_SECRET)
    at = {"first": 0, "middle": 1, "last": 2}[where]
    raw = "{" + ",".join([*members[:at], f'"sign":"{sign}"', *members[at:]]) + "}"
    assert verify_signed(raw, TEST_APP_SECRET)
    assert split_signed(raw) == ('{"a":"1","b":2}', sign)


def test_any_change_to_the_sent_text_breaks_the_signature() -> None:
    """A space, an escape or a second sign member is refused: what is verified is the text
    exactly as it was sent."""
    body = {"customer_order_no": "K1", "order_status": "success", "price": "1.0000"}
    raw = canonical_json({**body, "sign": sign_params(body, TEST_APP_SECRET)})
    assert verify_signed(raw, TEST_APP_SECRET)
    assert not verify_signed(raw.replace("}", " }"), TEST_APP_SECRET)
    assert not verify_signed(raw.replace('"K1"', '"K2"'), TEST_APP_SECRET)
    assert not verify_signed(raw[:-1] + ',"sign":"00"}', TEST_APP_SECRET)
    assert not verify_signed(raw, "f" * 32)
    assert not verify_signed(canonical_json(body), TEST_APP_SECRET)


@pytest.mark.parametrize(("ciphertext", "plaintext"), [
    ("gxRcwSF+LfX/IKcK7kSK5g==", "PW-0001-ABCD"),  # openssl enc -aes-256-ecb -K <secret hex>
    ("jFZgrJZeDF/2gVEq/SvHnA==", "中文卡密"),
])
def test_card_fields_decrypt_as_openssl_encrypts_them(ciphertext: str, plaintext: str) -> None:
    """Base64 of AES-256-ECB/PKCS7 under the secret's bytes decrypts to the card, handed
    over as a CardSecret; our encryption (the fake's) gives the same ciphertext."""
    secret = decrypt_card(ciphertext, TEST_APP_SECRET)
    assert secret.reveal() == plaintext
    assert plaintext not in repr(secret)
    assert encrypt_card(plaintext, TEST_APP_SECRET) == ciphertext


@pytest.mark.parametrize("bad", ["not base64!", "", "YWJj", "gxRcwSF+LfX/IKcK7kSK5g=="])
def test_undecryptable_card_fields_are_refused_without_naming_them(bad: str) -> None:
    """Not Base64, not whole blocks, or encrypted under another key: CardCipherError whose
    message names neither the ciphertext nor any plaintext."""
    with pytest.raises(CardCipherError) as caught:
        decrypt_card(bad, "0" * 32 if bad.startswith("gx") else TEST_APP_SECRET)
    assert (bad not in str(caught.value)) or not bad
    assert "PW-0001" not in str(caught.value)


def test_a_secret_that_is_not_an_aes_256_key_is_refused() -> None:
    """A secret of the wrong size cannot decrypt (and says so)."""
    with pytest.raises(CardCipherError, match="32 bytes"):
        decrypt_card("gxRcwSF+LfX/IKcK7kSK5g==", "short")
