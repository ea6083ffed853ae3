"""The merchant's POP tokens: what they are, and where they live between calls and restarts.

:class:`TokenSet` is one access/refresh token pair with its expiry; :class:`TokenStore`
keeps it in the shop's encrypted secret store (:class:`connectors.base.ShopContext`), so a
restart or a second robot process reuses a refreshed token instead of the stale one from
the shop file. When the shop file's seed tokens (or code) change, the file wins again: the
merchant re-authorized. Nothing here may log or repr a token.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from connectors.base import ShopContext
from connectors.common.times import from_epoch
from connectors.errors import BadPlatformData
from connectors.pinduoduo.config import PinduoduoConfig

SECRET_NAME = "pop_tokens"  # noqa: S105 - the name of a stored secret, not a secret


@dataclass(frozen=True)
class TokenSet:
    access_token: str
    refresh_token: str | None
    expires_at: datetime | None  # None: unknown (tokens pasted into the shop file)
    refresh_expires_at: datetime | None
    owner_id: str
    seed: str  # fingerprint of the shop-file credentials these tokens descend from

    def __repr__(self) -> str:
        return f"TokenSet(owner_id={self.owner_id!r}, expires_at={self.expires_at!r})"

    def expiring(self, now: datetime, margin: timedelta) -> bool:
        return self.expires_at is not None and now >= self.expires_at - margin

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def to_json(self) -> str:
        return json.dumps({
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "refresh_expires_at": (self.refresh_expires_at.isoformat()
                                   if self.refresh_expires_at else None),
            "owner_id": self.owner_id,
            "seed": self.seed,
        })

    @classmethod
    def from_json(cls, raw: str) -> TokenSet:
        data = json.loads(raw)
        return cls(
            access_token=str(data["access_token"]),
            refresh_token=data.get("refresh_token"),
            expires_at=_iso(data.get("expires_at")),
            refresh_expires_at=_iso(data.get("refresh_expires_at")),
            owner_id=str(data.get("owner_id") or ""),
            seed=str(data.get("seed") or ""),
        )

    @classmethod
    def from_response(cls, body: Mapping[str, Any], now: datetime, seed: str) -> TokenSet:
        """A ``pop_auth_token_create/refresh_response`` object as a TokenSet."""
        access = body.get("access_token")
        if not isinstance(access, str) or not access:
            raise BadPlatformData("POP token answer has no access_token")
        refresh = body.get("refresh_token")
        return cls(
            access_token=access,
            refresh_token=refresh if isinstance(refresh, str) and refresh else None,
            expires_at=_expiry(body, "expires_at", "expires_in", now),
            refresh_expires_at=_expiry(body, "refresh_token_expires_at",
                                       "refresh_token_expires_in", now),
            owner_id=str(body.get("owner_id") or ""),
            seed=seed,
        )


def _iso(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None


def _expiry(body: Mapping[str, Any], at_key: str, in_key: str, now: datetime) -> datetime | None:
    """POP gives both an absolute ``*_at`` (Unix seconds) and a relative ``*_in``."""
    try:
        if body.get(at_key) not in (None, ""):
            return from_epoch(int(body[at_key]))
        if body.get(in_key) not in (None, ""):
            return now + timedelta(seconds=int(body[in_key]))
    except (TypeError, ValueError) as exc:
        raise BadPlatformData(f"POP token answer has a malformed {at_key}/{in_key}") from exc
    return None


def seed_of(config: PinduoduoConfig) -> str:
    """A fingerprint of the shop file's credentials (never the credentials themselves)."""
    parts = [config.client_id]
    for secret in (config.access_token, config.refresh_token, config.code):
        parts.append(secret.get_secret_value() if secret is not None else "")
    return hashlib.sha256("\x00".join(parts).encode("utf-8")).hexdigest()[:16]


class TokenStore:
    """Loads and saves the shop's TokenSet through its ShopContext."""

    def __init__(self, config: PinduoduoConfig, context: ShopContext) -> None:
        self._config = config
        self._context = context
        self.seed = seed_of(config)

    def load(self) -> TokenSet | None:
        """The stored tokens if they descend from the current shop file; else the file's own
        tokens (stored now); None when only an authorization code is configured."""
        raw = self._context.load_secret(SECRET_NAME)
        if raw:
            try:
                stored = TokenSet.from_json(raw)
            except (ValueError, KeyError, TypeError):
                stored = None  # unreadable: fall back to the shop file
            if stored is not None and stored.seed == self.seed:
                return stored
        access = self._config.access_token
        if access is None:
            return None
        refresh = self._config.refresh_token
        tokens = TokenSet(
            access_token=access.get_secret_value(),
            refresh_token=refresh.get_secret_value() if refresh is not None else None,
            expires_at=None, refresh_expires_at=None, owner_id="", seed=self.seed,
        )
        self.save(tokens)
        return tokens

    def save(self, tokens: TokenSet) -> None:
        self._context.store_secret(SECRET_NAME, replace(tokens, seed=self.seed).to_json())
