# -*- test-case-name: tests.test_addrbook -*-
"""
The address book: where a node remembers which other nodes exist.

This follows Bitcoin Core's ``addrman`` (the design from Heilman et al.,
"Eclipse Attacks on Bitcoin's Peer-to-Peer Network", 2015):

* Two tables.  *new* holds addresses we were told about and never
  connected to; *tried* holds addresses we once completed a handshake with.
* Each table is an array of buckets of fixed-size slots.  Where an address
  lands is decided by a keyed hash with a secret 32-byte key that only this
  node knows, over network *groups* (IPv4 /16, IPv6 /32):

  - new bucket  = H(key, source_group, H(key, addr_group, source_group) % NEW_BUCKETS_PER_SOURCE_GROUP)
  - tried bucket = H(key, addr_group, H(key, addr) % TRIED_BUCKETS_PER_GROUP)
  - slot        = H(key, table, bucket, addr) % BUCKET_SIZE

  So one source group can fill at most NEW_BUCKETS_PER_SOURCE_GROUP of the
  new buckets, and one address group at most TRIED_BUCKETS_PER_GROUP of the
  tried ones, however many addresses an attacker owns.
* A new address only overwrites a slot whose occupant is terrible.  Moving
  an address into an occupied tried slot is *test-before-evict*: the
  collision is recorded, the occupant should be probed (``select_tried_collision``)
  and ``resolve_collisions`` evicts it only if it failed that test.
* ``select`` picks tried or new with even odds, then a random slot,
  accepting its occupant with a chance that decays with failed attempts and
  recent tries, raised by 1.2x for every rejection (Bitcoin's bias).

Sizes.  Bitcoin uses 1024x64 new and 256x64 tried slots (81,920 entries);
ORB networks are expected to be far smaller (thousands of nodes, not tens
of thousands), and every peer of the 1,000-node discovery simulation keeps a
book, so we use a quarter of Bitcoin's buckets, keeping its ratios:

* ``NEW_BUCKET_COUNT = 256``, ``TRIED_BUCKET_COUNT = 64``, ``BUCKET_SIZE = 64``:
  at most 16,384 + 4,096 entries (a few MB persisted);
* ``NEW_BUCKETS_PER_SOURCE_GROUP = 16``: one source group reaches 1/16 of
  the new table, the same fraction as Bitcoin's 64/1024;
* ``TRIED_BUCKETS_PER_GROUP = 2``: one address group reaches 1/32 of the
  tried table, as Bitcoin's 8/256.

Simplification against Bitcoin: an address sits in at most one new bucket
(Bitcoin allows up to 8 references from different sources).

Loopback.  All tests run on 127.0.0.0/8, which Bitcoin would reject as
non-routable and lump into one group.  ``allow_loopback=True`` accepts it;
``group_fn=prefix_group`` (first two octets, even on loopback) gives
127.1.x.x and 127.2.x.x distinct groups for tests and the eclipse
simulation.

The core does no I/O: time comes from ``clock.seconds()``, randomness from
an injectable ``random.Random``, and persistence goes through
``orb._db.Database`` in ``dump``/``load``.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import math
import os
import random
import sqlite3
import struct
from collections.abc import Callable, Iterable
from typing import Any

import attrs
from twisted.internet.defer import Deferred

from orb.net.logs import orb_logger
from orb.protocol import addresses, limits

log = orb_logger()

NEW_BUCKET_COUNT = 256
TRIED_BUCKET_COUNT = 64
BUCKET_SIZE = 64
NEW_BUCKETS_PER_SOURCE_GROUP = 16
TRIED_BUCKETS_PER_GROUP = 2
MAX_ENTRIES = (NEW_BUCKET_COUNT + TRIED_BUCKET_COUNT) * BUCKET_SIZE

KEY_BYTES = 32
NODE_ID_BYTES = addresses.NODE_ID_BYTES
MAX_ROLES = 2**32 - 1
MAX_ADDR_PER_MESSAGE = limits.MAX_ADDR_ENTRIES  # GETADDR/ADDR answer cap, and the most add() looks at
GETADDR_MAX_PCT = 23  # share of the book returned to one GETADDR

# is_terrible / chance, as in Bitcoin (seconds)
HORIZON_S = 30 * 86400  # older than this: forget
FUTURE_SLACK_S = 10 * 60  # a timestamp this far in the future is a lie
RETRIES = 3  # failures with no success ever: forget
MAX_FAILURES = 10  # failures in MIN_FAIL_S: forget
MIN_FAIL_S = 7 * 86400
RECENT_TRY_S = 60  # never call terrible something tried this recently
PENALTY_S = 2 * 3600  # relayed timestamps are aged by this
REPLACEMENT_S = 4 * 3600  # a tried entry good this recently survives a collision
TEST_WINDOW_S = 40 * 60  # unresolved collisions older than this evict anyway
MAX_TRIED_COLLISIONS = 10
CONNECTED_UPDATE_S = 20 * 60
MAX_DISCOURAGED = 10_000
MAX_SELECT_ROUNDS = 10_000  # defensive bound on select's rejection loop

Group = bytes


AddressError = addresses.AddressError  # one definition of a valid address: orb.protocol.addresses


@attrs.frozen
class PeerAddress:
    """One gossiped address, as carried by ADDR."""

    ip: str
    port: int
    roles: int = 0
    node_id: bytes = b"\x00" * NODE_ID_BYTES
    timestamp: int = 0

    @property
    def endpoint(self) -> tuple[str, int]:
        return (self.ip, self.port)


def normalize_ip(ip: str) -> str:
    """Canonical text of an IP; IPv4-mapped IPv6 becomes IPv4.  Raises
    ``AddressError`` for anything that is not an IP literal."""
    if not isinstance(ip, str):
        raise AddressError(f"not an IP address: {ip!r:.64}")
    return _normalize_ip(ip)


@functools.lru_cache(maxsize=65536)
def _normalize_ip(ip: str) -> str:
    return addresses.check_ip(ip)


def check_address(addr: PeerAddress) -> PeerAddress:
    """Validate the fields and return the address with its IP normalized."""
    if not isinstance(addr, PeerAddress):
        raise AddressError(f"not a PeerAddress: {type(addr).__name__}")
    ip = normalize_ip(addr.ip)
    if type(addr.port) is not int or not 0 < addr.port < 65536:
        raise AddressError(f"bad port {addr.port!r:.32}")
    if type(addr.roles) is not int or not 0 <= addr.roles <= MAX_ROLES:
        raise AddressError(f"bad roles {addr.roles!r:.32}")
    if not isinstance(addr.node_id, bytes) or len(addr.node_id) != NODE_ID_BYTES:
        raise AddressError("node id must be 32 bytes")
    if type(addr.timestamp) is not int or not 0 <= addr.timestamp < 2**63:
        raise AddressError(f"bad timestamp {addr.timestamp!r:.32}")
    return attrs.evolve(addr, ip=ip) if ip != addr.ip else addr


_PRIVATE_V4 = [
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "198.18.0.0/15")
]


_ULA_V6 = ipaddress.ip_network("fc00::/7")
_DOCUMENTATION = [
    ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
]


@functools.lru_cache(maxsize=65536)
def is_routable(ip: str, allow_loopback: bool = False, allow_private: bool = False) -> bool:
    """Would it make sense to gossip and dial this IP?  ``ip`` must be
    normalized already."""
    addr = ipaddress.ip_address(ip)
    if addr.is_unspecified or addr.is_multicast or addr.is_link_local:
        return False
    if isinstance(addr, ipaddress.IPv4Address):
        if addr == ipaddress.IPv4Address("255.255.255.255") or addr.is_reserved:
            return False
        if addr.packed[0] == 0:  # 0.0.0.0/8, "this network"
            return False
        if any(addr in n for n in _PRIVATE_V4):
            return allow_private
    else:
        if addr.is_reserved and not addr.is_loopback:
            return False
        if addr in _ULA_V6:
            return allow_private
    if addr.is_loopback:
        return allow_loopback
    if any(addr in n for n in _DOCUMENTATION):
        return False
    return True


def network_group(ip: str) -> Group:
    """Bitcoin's grouping: IPv4 /16, IPv6 /32, and every local or private
    address in one group (they are all "us")."""
    addr = ipaddress.ip_address(ip)
    if addr.is_loopback or addr.is_private and not addr.is_global:
        return b"local"
    if isinstance(addr, ipaddress.IPv4Address):
        return b"\x04" + addr.packed[:2]
    return b"\x06" + addr.packed[:4]


def prefix_group(ip: str) -> Group:
    """First two octets for IPv4 (/16) and /32 for IPv6, with no special
    case for loopback: 127.1.x.x and 127.2.x.x are different groups."""
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv4Address):
        return b"\x04" + addr.packed[:2]
    return b"\x06" + addr.packed[:4]


@attrs.define
class AddrInfo:
    """What the book knows about one address.  Mutable, internal; callers
    get copies from ``info()``."""

    addr: PeerAddress
    source_ip: str
    last_try_s: float = 0.0
    last_count_attempt_s: float = 0.0
    last_success_s: float = 0.0
    attempts: int = 0
    in_tried: bool = False
    bucket: int = -1
    position: int = -1

    def is_terrible(self, now: float) -> bool:
        if self.last_try_s and now - self.last_try_s < RECENT_TRY_S:
            return False
        ts = self.addr.timestamp
        if ts > now + FUTURE_SLACK_S:
            return True
        if ts == 0 or now - ts > HORIZON_S:
            return True
        if self.last_success_s == 0 and self.attempts >= RETRIES:
            return True
        if now - self.last_success_s > MIN_FAIL_S and self.attempts >= MAX_FAILURES:
            return True
        return False

    def chance(self, now: float) -> float:
        c = 1.0
        if now - self.last_try_s < 10 * 60:
            c *= 0.01
        return c * 0.66 ** min(self.attempts, 8)


def _h(key: bytes, *parts: bytes) -> int:
    h = hashlib.blake2b(key=key, digest_size=8)
    for p in parts:
        h.update(struct.pack(">H", len(p)))
        h.update(p)
    return int.from_bytes(h.digest(), "big")


def _endpoint_bytes(ip: str, port: int) -> bytes:
    return ipaddress.ip_address(ip).packed + struct.pack(">H", port)


Endpoint = tuple[str, int]

MIGRATIONS = [
    """
    CREATE TABLE addrbook_meta (k TEXT PRIMARY KEY, v BLOB NOT NULL);
    CREATE TABLE addrbook_entry (
        ip TEXT NOT NULL,
        port INTEGER NOT NULL,
        roles INTEGER NOT NULL,
        node_id BLOB NOT NULL,
        timestamp INTEGER NOT NULL,
        source_ip TEXT NOT NULL,
        tbl TEXT NOT NULL CHECK (tbl IN ('new', 'tried')),
        bucket INTEGER NOT NULL,
        position INTEGER NOT NULL,
        attempts INTEGER NOT NULL,
        last_try_s REAL NOT NULL,
        last_count_attempt_s REAL NOT NULL,
        last_success_s REAL NOT NULL,
        PRIMARY KEY (ip, port)
    );
    CREATE TABLE addrbook_discouraged (ip TEXT PRIMARY KEY, until_s REAL NOT NULL);
    """,
]


class AddressBook:
    """Bitcoin-style new/tried address tables.  See the module docstring."""

    def __init__(
        self,
        clock: Any,
        key: bytes | None = None,
        rng: random.Random | None = None,
        allow_loopback: bool = False,
        allow_private: bool = False,
        group_fn: Callable[[str], Group] = network_group,
        test_before_evict: bool = True,
    ) -> None:
        if key is None:
            key = os.urandom(KEY_BYTES)
        if not isinstance(key, bytes) or len(key) != KEY_BYTES:
            raise ValueError("address book key must be 32 bytes")
        self._clock = clock
        self.key = key
        self._rng = rng if rng is not None else random.SystemRandom()
        self.allow_loopback = allow_loopback
        self.allow_private = allow_private
        self._group = group_fn
        self.test_before_evict = test_before_evict
        self._infos: dict[Endpoint, AddrInfo] = {}
        self._new: list[dict[int, Endpoint]] = [{} for _ in range(NEW_BUCKET_COUNT)]
        self._tried: list[dict[int, Endpoint]] = [{} for _ in range(TRIED_BUCKET_COUNT)]
        self._new_count = 0
        self._tried_count = 0
        self._collisions: dict[Endpoint, float] = {}
        self._discouraged: dict[str, float] = {}
        self._last_good_s = 1.0  # Bitcoin starts this at 1 so the first failures count

    # -- placement ----------------------------------------------------------

    def _new_bucket(self, ip: str, port: int, source_ip: str) -> int:
        ag, sg = self._group(ip), self._group(source_ip)
        h1 = _h(self.key, b"N1", ag, sg) % NEW_BUCKETS_PER_SOURCE_GROUP
        return _h(self.key, b"N2", sg, h1.to_bytes(2, "big")) % NEW_BUCKET_COUNT

    def _tried_bucket(self, ip: str, port: int) -> int:
        h1 = _h(self.key, b"T1", _endpoint_bytes(ip, port)) % TRIED_BUCKETS_PER_GROUP
        return _h(self.key, b"T2", self._group(ip), h1.to_bytes(2, "big")) % TRIED_BUCKET_COUNT

    def _position(self, tried: bool, bucket: int, ip: str, port: int) -> int:
        tag = b"K" if tried else b"N"
        return _h(self.key, b"P", tag, bucket.to_bytes(2, "big"), _endpoint_bytes(ip, port)) % BUCKET_SIZE

    def _now(self, now: float | None) -> float:
        return self._clock.seconds() if now is None else now

    # -- queries ------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._infos)

    def __contains__(self, endpoint: object) -> bool:
        return endpoint in self._infos

    @property
    def new_count(self) -> int:
        return self._new_count

    @property
    def tried_count(self) -> int:
        return self._tried_count

    def info(self, ip: str, port: int) -> AddrInfo | None:
        """A copy of what the book holds for ``ip:port``, or None."""
        try:
            found = self._infos.get((normalize_ip(ip), port))
        except AddressError:
            return None
        return attrs.evolve(found) if found is not None else None

    def addresses(self) -> list[PeerAddress]:
        return [i.addr for i in self._infos.values()]

    def is_terrible(self, ip: str, port: int, now: float | None = None) -> bool:
        info = self._infos.get((normalize_ip(ip), port))
        return info is None or info.is_terrible(self._now(now))

    def acceptable(self, ip: str) -> bool:
        """Routable under this book's policy (ip must be normalized)."""
        return is_routable(ip, self.allow_loopback, self.allow_private)

    # -- internal table moves -----------------------------------------------

    def _clear_slot(self, info: AddrInfo) -> None:
        table = self._tried if info.in_tried else self._new
        slot = table[info.bucket]
        if slot.get(info.position) == info.addr.endpoint:
            del slot[info.position]
            if info.in_tried:
                self._tried_count -= 1
            else:
                self._new_count -= 1
        info.bucket = info.position = -1

    def _delete(self, info: AddrInfo) -> None:
        self._clear_slot(info)
        self._infos.pop(info.addr.endpoint, None)
        self._collisions.pop(info.addr.endpoint, None)

    def _place_new(self, info: AddrInfo, now: float) -> bool:
        """Put ``info`` into its new slot, evicting a terrible occupant.
        Returns False (and leaves the table unchanged) if the slot holds a
        decent address."""
        ip, port = info.addr.endpoint
        b = self._new_bucket(ip, port, info.source_ip)
        p = self._position(False, b, ip, port)
        occupant = self._new[b].get(p)
        if occupant is not None and occupant != info.addr.endpoint:
            old = self._infos[occupant]
            if not old.is_terrible(now):
                return False
            self._delete(old)
        info.in_tried = False
        info.bucket, info.position = b, p
        if self._new[b].get(p) is None:
            self._new_count += 1
        self._new[b][p] = info.addr.endpoint
        self._infos[info.addr.endpoint] = info
        return True

    def _make_tried(self, info: AddrInfo, now: float) -> None:
        """Move from new to tried, pushing any tried occupant back to new."""
        ip, port = info.addr.endpoint
        self._clear_slot(info)
        b = self._tried_bucket(ip, port)
        p = self._position(True, b, ip, port)
        occupant = self._tried[b].get(p)
        if occupant is not None:
            old = self._infos[occupant]
            self._clear_slot(old)
            # Back to new, as if it had told us about itself.
            old.source_ip = old.addr.ip
            if not self._place_new(old, now):
                ob = self._new_bucket(old.addr.ip, old.addr.port, old.source_ip)
                op = self._position(False, ob, old.addr.ip, old.addr.port)
                self._delete(self._infos[self._new[ob][op]])
                self._place_new(old, now)
        info.in_tried = True
        info.bucket, info.position = b, p
        self._tried[b][p] = info.addr.endpoint
        self._tried_count += 1
        self._collisions.pop(info.addr.endpoint, None)

    # -- the Bitcoin operations ---------------------------------------------

    def add(self, addrs: Iterable[PeerAddress], source: str, now: float | None = None) -> int:
        """Learn addresses gossiped by ``source`` (the IP that sent them).

        Looks at no more than MAX_ADDR_PER_MESSAGE entries.  Malformed,
        unroutable, discouraged and terrible entries are skipped.  Returns
        how many addresses were new to the book."""
        now = self._now(now)
        try:
            source = normalize_ip(source)
        except AddressError:
            log.debug("dropping addresses from a malformed source {source!r}", source=source)
            return 0
        added = 0
        for i, raw in enumerate(addrs):
            if i >= MAX_ADDR_PER_MESSAGE:
                break
            try:
                addr = check_address(raw)
            except AddressError:
                continue
            if not self.acceptable(addr.ip) or self.is_discouraged(addr.ip, now):
                continue
            if addr.timestamp > now + FUTURE_SLACK_S or addr.timestamp <= 0:
                # Bitcoin: an implausible time becomes "5 days ago".
                addr = attrs.evolve(addr, timestamp=int(now) - 5 * 86400)
            penalty = 0 if addr.ip == source else PENALTY_S
            existing = self._infos.get(addr.endpoint)
            if existing is not None:
                old = existing.addr
                online_recently = now - addr.timestamp < 86400
                update_interval = 3600 if online_recently else 86400
                ts = old.timestamp
                if addr.timestamp > old.timestamp + update_interval + penalty:
                    ts = max(0, addr.timestamp - penalty)
                existing.addr = attrs.evolve(old, timestamp=ts, roles=addr.roles | old.roles)
                continue
            stamped = attrs.evolve(addr, timestamp=max(0, addr.timestamp - penalty))
            info = AddrInfo(addr=stamped, source_ip=source)
            if info.is_terrible(now):
                continue
            if self._place_new(info, now):
                added += 1
        return added

    def good(self, ip: str, port: int, now: float | None = None, node_id: bytes | None = None) -> bool:
        """A handshake with ``ip:port`` succeeded.  Moves it to tried, unless
        that would evict a tried address that has not been tested yet; then
        the collision is queued and False is returned."""
        now = self._now(now)
        self._last_good_s = now
        info = self._infos.get((normalize_ip(ip), port))
        if info is None:
            return False
        info.last_success_s = now
        info.last_try_s = now
        info.attempts = 0
        if node_id is not None and len(node_id) == NODE_ID_BYTES:
            info.addr = attrs.evolve(info.addr, node_id=node_id)
        if info.in_tried:
            return True
        return self._good_move(info, now, self.test_before_evict)

    def _good_move(self, info: AddrInfo, now: float, test_before_evict: bool) -> bool:
        ip, port = info.addr.endpoint
        b = self._tried_bucket(ip, port)
        p = self._position(True, b, ip, port)
        occupant = self._tried[b].get(p)
        if test_before_evict and occupant is not None and occupant != info.addr.endpoint:
            if len(self._collisions) < MAX_TRIED_COLLISIONS:
                self._collisions.setdefault(info.addr.endpoint, now)
            return False
        self._make_tried(info, now)
        return True

    def attempt(self, ip: str, port: int, count_failure: bool = True, now: float | None = None) -> None:
        """We are dialling ``ip:port``.  Counts as a failure until ``good``
        says otherwise, but only once per ``good`` anywhere (so being offline
        does not make the whole book terrible)."""
        now = self._now(now)
        info = self._infos.get((normalize_ip(ip), port))
        if info is None:
            return
        info.last_try_s = now
        if count_failure and info.last_count_attempt_s < self._last_good_s:
            info.last_count_attempt_s = now
            info.attempts += 1

    def connected(self, ip: str, port: int, now: float | None = None) -> None:
        """A connection to ``ip:port`` is alive: refresh its timestamp (at
        most every CONNECTED_UPDATE_S, like Bitcoin)."""
        now = self._now(now)
        info = self._infos.get((normalize_ip(ip), port))
        if info is not None and now - info.addr.timestamp > CONNECTED_UPDATE_S:
            info.addr = attrs.evolve(info.addr, timestamp=int(now))

    def remove(self, ip: str, port: int) -> bool:
        info = self._infos.get((normalize_ip(ip), port))
        if info is None:
            return False
        self._delete(info)
        return True

    def select(self, new_only: bool = False, now: float | None = None) -> PeerAddress | None:
        """A random address to dial, biased towards ones likely to work, or
        None if the book (or the new table, with ``new_only``) is empty."""
        now = self._now(now)
        if self._new_count == 0 and (new_only or self._tried_count == 0):
            return None
        use_tried = (
            not new_only and self._tried_count > 0 and (self._new_count == 0 or self._rng.random() < 0.5)
        )
        table = self._tried if use_tried else self._new
        occupied = [b for b in table if b]  # drawing empty buckets only wastes rounds on a sparse table
        factor = 1.0
        for _ in range(MAX_SELECT_ROUNDS):
            bucket = self._rng.choice(occupied)
            endpoint = bucket[self._rng.choice(list(bucket))]
            info = self._infos[endpoint]
            if self.is_discouraged(info.addr.ip, now):
                factor *= 1.2
                continue
            if self._rng.random() < min(1.0, factor * info.chance(now)):
                return info.addr
            factor *= 1.2
        return None

    def get_addr(self, max_count: int = MAX_ADDR_PER_MESSAGE, max_pct: int = GETADDR_MAX_PCT,
                 now: float | None = None) -> list[PeerAddress]:
        """Addresses for a GETADDR answer: a random ``max_pct`` percent of
        the book (rounded up, so a small book still answers), at most
        ``max_count`` (itself at most 1000), none terrible."""
        now = self._now(now)
        max_count = max(0, min(max_count, MAX_ADDR_PER_MESSAGE))
        n = min(max_count, math.ceil(len(self._infos) * max_pct / 100))
        keys = list(self._infos)
        self._rng.shuffle(keys)
        out: list[PeerAddress] = []
        for k in keys:
            if len(out) >= n:
                break
            info = self._infos[k]
            if info.is_terrible(now) or self.is_discouraged(info.addr.ip, now):
                continue
            out.append(info.addr)
        return out

    # -- test-before-evict --------------------------------------------------

    def select_tried_collision(self, now: float | None = None) -> PeerAddress | None:
        """The tried occupant that a pending collision wants to evict; dial
        it, then call ``good`` or ``attempt`` for it, then
        ``resolve_collisions``."""
        if not self._collisions:
            return None
        endpoint = self._rng.choice(list(self._collisions))
        info = self._infos.get(endpoint)
        if info is None:
            self._collisions.pop(endpoint, None)
            return None
        b = self._tried_bucket(*endpoint)
        p = self._position(True, b, *endpoint)
        occupant = self._tried[b].get(p)
        return self._infos[occupant].addr if occupant is not None else None

    def resolve_collisions(self, now: float | None = None) -> None:
        """Bitcoin's ResolveCollisions: keep the tried occupant if it proved
        good recently, evict it if it failed its test (or nobody tested it
        within TEST_WINDOW_S)."""
        now = self._now(now)
        for endpoint, since_s in list(self._collisions.items()):
            info = self._infos.get(endpoint)
            if info is None or info.in_tried:
                self._collisions.pop(endpoint, None)
                continue
            b = self._tried_bucket(*endpoint)
            p = self._position(True, b, *endpoint)
            occupant = self._tried[b].get(p)
            if occupant is None:
                self._good_move(info, now, test_before_evict=False)
            else:
                old = self._infos[occupant]
                if now - old.last_success_s < REPLACEMENT_S:
                    self._collisions.pop(endpoint, None)  # occupant is fine
                    continue
                if now - old.last_try_s < REPLACEMENT_S:
                    if now - old.last_try_s > RECENT_TRY_S:
                        # Tried since and not good: evict it.
                        self._good_move(info, now, test_before_evict=False)
                    else:
                        continue  # a test is in flight
                elif now - since_s > TEST_WINDOW_S:
                    self._good_move(info, now, test_before_evict=False)
                else:
                    continue
            self._collisions.pop(endpoint, None)

    @property
    def pending_collisions(self) -> int:
        return len(self._collisions)

    # -- discouragement -----------------------------------------------------

    def discourage(self, ip: str, until_s: float) -> None:
        """Refuse ``ip`` (all ports) until ``until_s``: misbehaving peers.
        The list is bounded; when full, the entry expiring first goes."""
        try:
            ip = normalize_ip(ip)
        except AddressError:
            return
        if ip not in self._discouraged and len(self._discouraged) >= MAX_DISCOURAGED:
            now = self._clock.seconds()
            for k in [k for k, v in self._discouraged.items() if v <= now]:
                del self._discouraged[k]
            if len(self._discouraged) >= MAX_DISCOURAGED:
                del self._discouraged[min(self._discouraged, key=self._discouraged.__getitem__)]
        self._discouraged[ip] = max(until_s, self._discouraged.get(ip, 0.0))

    def is_discouraged(self, ip: str, now: float | None = None) -> bool:
        if not isinstance(ip, str):
            return False
        until = self._discouraged.get(ip)
        if until is None:
            try:
                until = self._discouraged.get(normalize_ip(ip))
            except AddressError:
                return False
            if until is None:
                return False
        if self._now(now) >= until:
            self._discouraged.pop(ip, None)
            return False
        return True

    # -- persistence --------------------------------------------------------

    def _rows(self) -> tuple[list[tuple], list[tuple]]:
        entries = [
            (
                i.addr.ip, i.addr.port, i.addr.roles, i.addr.node_id, i.addr.timestamp, i.source_ip,
                "tried" if i.in_tried else "new", i.bucket, i.position, i.attempts,
                i.last_try_s, i.last_count_attempt_s, i.last_success_s,
            )
            for i in self._infos.values()
        ]
        return entries, list(self._discouraged.items())

    def dump(self, db: Any) -> Deferred[None]:
        """Write the whole book to ``db`` (opened with ``MIGRATIONS``) in one
        transaction.  The snapshot is taken now, on the caller's thread."""
        entries, discouraged = self._rows()
        key = self.key

        def write(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM addrbook_entry")
            conn.execute("DELETE FROM addrbook_discouraged")
            conn.execute("INSERT OR REPLACE INTO addrbook_meta (k, v) VALUES ('key', ?)", (key,))
            conn.executemany("INSERT INTO addrbook_entry VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", entries)
            conn.executemany("INSERT INTO addrbook_discouraged VALUES (?, ?)", discouraged)

        return db.run(write)

    @classmethod
    def load(cls, db: Any, clock: Any, **kw: Any) -> Deferred[AddressBook]:
        """Rebuild a book from ``db``; a fresh key is made (and used) if the
        database holds none.  Rows that fail validation are skipped, and
        positions are recomputed so a change of constants is harmless."""

        def read(conn: sqlite3.Connection) -> tuple[Any, list, list]:
            row = conn.execute("SELECT v FROM addrbook_meta WHERE k = 'key'").fetchone()
            entries = conn.execute(
                "SELECT * FROM addrbook_entry ORDER BY tbl = 'tried' DESC, last_success_s DESC"
            ).fetchall()
            disc = conn.execute("SELECT ip, until_s FROM addrbook_discouraged").fetchall()
            return (row[0] if row else None), entries, disc

        def build(result: tuple[Any, list, list]) -> AddressBook:
            key, entries, disc = result
            if not isinstance(key, bytes) or len(key) != KEY_BYTES:
                key = None
            book = cls(clock, key=key, **kw)
            book._restore(entries, disc)
            return book

        return db.run(read).addCallback(build)

    def _restore(self, entries: list, disc: list) -> None:
        now = self._clock.seconds()
        skipped = 0
        for row in entries:
            try:
                (ip, port, roles, node_id, ts, source_ip, tbl, _b, _p, attempts,
                 last_try, last_count, last_success) = row
                addr = check_address(PeerAddress(ip, port, roles, bytes(node_id), ts))
                source_ip = normalize_ip(source_ip)
                if not self.acceptable(addr.ip) or (addr.endpoint in self._infos):
                    raise AddressError("unacceptable or duplicate")
                info = AddrInfo(
                    addr=addr, source_ip=source_ip, last_try_s=float(last_try),
                    last_count_attempt_s=float(last_count), last_success_s=float(last_success),
                    attempts=int(attempts),
                )
            except (AddressError, TypeError, ValueError):
                skipped += 1
                continue
            if tbl == "tried":
                b = self._tried_bucket(*addr.endpoint)
                p = self._position(True, b, *addr.endpoint)
                if self._tried[b].get(p) is None:
                    self._infos[addr.endpoint] = info
                    info.in_tried, info.bucket, info.position = True, b, p
                    self._tried[b][p] = addr.endpoint
                    self._tried_count += 1
                    continue
            if not self._place_new(info, now):
                skipped += 1
        for ip, until in disc:
            try:
                self.discourage(ip, float(until))
            except (TypeError, ValueError):
                skipped += 1
        if skipped:
            log.info("address book: skipped {count} stored entries", count=skipped)
