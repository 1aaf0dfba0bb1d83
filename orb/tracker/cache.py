# -*- test-case-name: tests.test_router -*-
"""
The tracker's result cache (RFC 10.6).

Only for functions whose manifest says ``pure`` (same input, same output,
no effects). An entry is keyed by (fid bytes, SHA-256 of the input bytes)
and holds a RESULT whose status is ``ok``; nothing else is ever stored.
It lives ``ttl_s`` from when it was stored, and the cache holds at most
``max_entries`` entries and ``max_bytes`` bytes of output and log: the
least recently used entries go first. A RESULT larger than a quarter of
``max_bytes`` is not cached at all, so one answer cannot empty the cache.

A hit is served as the stored RESULT with the ``cached`` TLV (0x0003, u32
big-endian: the entry's age in milliseconds) in its extension area.
"""

import collections
import hashlib
import struct

import attrs

from orb.protocol import messages as m
from orb.protocol.codes import ResultStatus, TlvType

DEFAULT_TTL_S = 60.0
DEFAULT_MAX_ENTRIES = 4096
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
ENTRY_OVERHEAD_BYTES = 256  # what an entry costs beyond its output and log, for the byte bound
_U32 = struct.Struct(">I")


def cache_key(fid_raw: bytes, data: bytes) -> tuple[bytes, bytes]:
    return fid_raw, hashlib.sha256(data).digest()


def with_cached_tlv(result: m.Result, age_s: float) -> m.Result:
    """``result`` marked as served from a cache ``age_s`` old (RFC 5.20, TLV ``cached``)."""
    age_ms = min(0xFFFFFFFF, max(0, int(age_s * 1000)))
    ext = tuple(t for t in result.ext if t.type != TlvType.CACHED)
    return attrs.evolve(result, ext=ext + (m.Tlv(int(TlvType.CACHED), _U32.pack(age_ms)),))


def cached_age_ms(result: m.Result) -> int | None:
    """The age a RESULT's ``cached`` TLV states, or None if it carries none (or a malformed one)."""
    for tlv in result.ext:
        if tlv.type == TlvType.CACHED and len(tlv.value) == _U32.size:
            return _U32.unpack(tlv.value)[0]
    return None


@attrs.frozen
class _Entry:
    result: m.Result
    replica: bytes | None
    stored_at: float
    size_bytes: int


class ResultCache:
    def __init__(self, clock, ttl_s=DEFAULT_TTL_S, max_entries=DEFAULT_MAX_ENTRIES, max_bytes=DEFAULT_MAX_BYTES):
        self.clock = clock
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries = collections.OrderedDict()  # key -> _Entry, least recently used first
        self.size_bytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self):
        return len(self._entries)

    def get(self, fid_raw, data):
        """(RESULT marked ``cached``, replica that ran it) for a live entry, else None."""
        key = cache_key(fid_raw, data)
        entry = self._entries.get(key)
        now = self.clock.seconds()
        if entry is not None and now - entry.stored_at >= self.ttl_s:
            self._remove(key)
            entry = None
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        return with_cached_tlv(entry.result, now - entry.stored_at), entry.replica

    def put(self, fid_raw, data, result, replica=None):
        """Store an ``ok`` RESULT; any other status, or one too large, is not stored. True if stored."""
        if result.status_kind is not ResultStatus.OK:
            return False
        size = len(result.output) + len(result.log) + ENTRY_OVERHEAD_BYTES
        if size > self.max_bytes // 4:
            return False
        key = cache_key(fid_raw, data)
        self._remove(key)
        ext = tuple(t for t in result.ext if t.type != TlvType.CACHED)
        self._entries[key] = _Entry(attrs.evolve(result, ext=ext), replica, self.clock.seconds(), size)
        self.size_bytes += size
        while len(self._entries) > self.max_entries or self.size_bytes > self.max_bytes:
            self._remove(next(iter(self._entries)))
        return True

    def _remove(self, key):
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.size_bytes -= entry.size_bytes
