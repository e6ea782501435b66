"""Tokens in the links of emails. Each names what it is for (so an open-pixel token
cannot unsubscribe anyone) and is decoded strictly: one spelling per token (URL-safe
base64 without padding, canonical), anything else is not a token.

- :func:`sign` / :func:`verify`: the payload in clear and an HMAC-SHA256 compared in
  constant time; for payloads that are random ids already (open and click tokens).
- :func:`seal` / :func:`unseal`: the payload encrypted and authenticated with AES-SIV
  (RFC 5297, deterministic: the same payload gives the same token), for payloads that
  must not be readable (the unsubscribe token names a lead).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import re

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_SEPARATOR = "."


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_B64 = re.compile(r"[A-Za-z0-9_-]*")


def _unb64(text: str) -> bytes:
    """Strict URL-safe base64: only its alphabet, no padding, and the one canonical
    spelling of the bytes (no stray bits in the last character)."""
    if not _B64.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not URL-safe base64")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error:
        raise ValueError("not URL-safe base64") from None
    if _b64(data) != text:
        raise ValueError("not the canonical spelling")
    return data


def _mac(secret: str, purpose: str, payload: bytes) -> bytes:
    mac = _keyed(secret).copy()  # the key's setup done once, not for every token
    mac.update(purpose.encode() + b"\x00" + payload)
    return mac.digest()[:18]


@functools.lru_cache(maxsize=32)
def _keyed(secret: str) -> hmac.HMAC:
    """HMAC-SHA256 keyed with *secret*, fed nothing yet (copy it before use)."""
    return hmac.new(secret.encode(), digestmod=hashlib.sha256)


def sign(secret: str, purpose: str, payload: str) -> str:
    """A URL-safe token carrying *payload*, valid only for *purpose*."""
    data = payload.encode()
    return _b64(data) + _SEPARATOR + _b64(_mac(secret, purpose, data))


def verify(secret: str, purpose: str, token: str) -> str | None:
    """The payload of a genuine *token* for *purpose*, else ``None``."""
    body, _, mac = token.partition(_SEPARATOR)
    try:
        data, given = _unb64(body), _unb64(mac)
    except ValueError:
        return None
    if not hmac.compare_digest(given, _mac(secret, purpose, data)):
        return None
    try:
        return data.decode()
    except UnicodeDecodeError:
        return None


@functools.lru_cache(maxsize=32)
def _sealing_key(secret: str) -> AESSIV:
    key = HKDF(
        algorithm=hashes.SHA256(), length=64, salt=None, info=b"nurture sealed tokens"
    ).derive(secret.encode())
    return AESSIV(key)


def seal(secret: str, purpose: str, payload: str) -> str:
    """A URL-safe token carrying *payload* encrypted (nobody without the secret can read
    it) and authenticated, valid only for *purpose*."""
    return _b64(_sealing_key(secret).encrypt(payload.encode(), [purpose.encode()]))


def unseal(secret: str, purpose: str, token: str) -> str | None:
    """The payload of a genuine sealed *token* for *purpose*, else ``None``."""
    try:
        data = _unb64(token)
        return _sealing_key(secret).decrypt(data, [purpose.encode()]).decode()
    except (ValueError, InvalidTag, UnicodeDecodeError):
        return None
