# -*- test-case-name: tests.test_fid -*-
"""
Function ids.

On the wire a fid is the raw self-describing digest: one algorithm byte
(0x01 = SHA-256) followed by the digest (32 bytes). As text (DNS labels,
the CLI, the registry) it is that digest in lowercase RFC 4648 base32
without padding: 53 characters, one DNS label.
"""

import base64
import functools
import hashlib
import re

ALGORITHM_SHA256 = 0x01
DIGEST_BYTES = {ALGORITHM_SHA256: 32}
TEXT_RE = re.compile(r"[a-z2-7]{1,63}\Z")


class FidError(ValueError):
    """Not a valid fid."""


def fid_for(package_bytes):
    """The raw fid of a canonical package."""
    return bytes([ALGORITHM_SHA256]) + hashlib.sha256(package_bytes).digest()


def check(raw):
    """Raise FidError unless ``raw`` is a fid of a known algorithm and length."""
    if not isinstance(raw, bytes) or not raw:
        raise FidError("a fid is a non-empty byte string")
    size = DIGEST_BYTES.get(raw[0])
    if size is None:
        raise FidError(f"unknown fid algorithm 0x{raw[0]:02x}")
    if len(raw) != 1 + size:
        raise FidError(f"a fid of algorithm 0x{raw[0]:02x} has {1 + size} bytes, not {len(raw)}")
    return raw


# base64's b32 codec is Python code: a fid converted on every call was a tenth of a cached call's
# time at the tracker (bench/invoke.py --profile --profile-cached). Both directions are memoised,
# bounded; only valid fids are kept (a FidError is not cached).
def to_text(raw):
    return _to_text(bytes(raw))


@functools.lru_cache(maxsize=4096)
def _to_text(raw):
    return base64.b32encode(check(raw)).decode("ascii").lower().rstrip("=")


def from_text(text):
    if not isinstance(text, str):  # before the cache: a list or dict from JSON is not hashable
        raise FidError(f"{text!r} is not a fid: expected lowercase base32, at most 63 characters")
    return _from_text(text)


@functools.lru_cache(maxsize=4096)
def _from_text(text):
    if not TEXT_RE.match(text):
        raise FidError(f"{text!r} is not a fid: expected lowercase base32, at most 63 characters")
    padded = text.upper() + "=" * (-len(text) % 8)
    try:
        raw = base64.b32decode(padded)
    except ValueError:
        raise FidError(f"{text!r} is not valid base32") from None
    if to_text(raw) != text:
        raise FidError(f"{text!r} is not in canonical form")
    return raw
