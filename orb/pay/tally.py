# -*- test-case-name: tests.test_pay_tally -*-
"""
A signer's tally: the cumulative counters (requests, bytes, epochs) per
(fid, host) that a tracker (or an authorized caller) has seen served, and
the vouchers it signs over them.

Counting is in memory (the router counts on every successful call, so it
must cost a dict update); ``flush()`` writes the counters to SQLite (WAL,
0600) and runs in a thread, periodically and always before a voucher is
signed, so a signed voucher's counters are never above what a restart
would find: after a crash the tally resumes from its last flush, and it
never signs counters lower than a voucher it handed out.

Two locks: ``_lock`` guards the counters and is held only for dict work
(the reactor thread takes it on every call); ``_write_lock`` serializes
the SQLite writes and signatures, which happen outside ``_lock``, so a
slow disk or a signature never stalls the counting. ``sign`` signs the
counters it just wrote, which may be below the ones in memory by then.

Which calls count is the router's decision (phase 2): successful calls it
mediated, not failed, timed-out, cached or refused ones, not calls from
the host's own keys; an epoch only when the host passed its challenges.
"""

from __future__ import annotations

import sqlite3
import threading
import time

from orb.pay import voucher as V
from orb.pay.book import _open_private

MAX_TALLY_ROWS = 1_000_000
DEFAULT_EXPIRY_S = 30 * 86400

_SCHEMA = """
CREATE TABLE tally (
    chain_id INTEGER NOT NULL,
    contract TEXT NOT NULL,
    fid BLOB NOT NULL,
    host TEXT NOT NULL,
    requests TEXT NOT NULL,
    bytes TEXT NOT NULL,
    epochs TEXT NOT NULL,
    PRIMARY KEY (chain_id, contract, fid, host)
);
"""


class TallyFull(V.VoucherError):
    """The tally holds its maximum number of (fid, host) rows."""


class Tally:
    """Cumulative counters per (fid, host) for one signer key on one escrow (``domain``)."""

    def __init__(self, path, key, domain, clock=None, expiry_s=DEFAULT_EXPIRY_S, max_rows=MAX_TALLY_ROWS):
        self.path = path
        self._key = key  # never logged
        self.signer = V.address_of(key)
        self.domain = domain
        self._clock = clock
        self.expiry_s = expiry_s
        self.max_rows = max_rows
        self._lock = threading.RLock()  # the counters: dict work only
        self._write_lock = threading.Lock()  # SQLite writes and signatures, one at a time
        self._counts = {}  # (fid32, host) -> [requests, bytes, epochs]
        self._dirty = set()
        if path != ":memory:":
            _open_private(path)
        self._conn = sqlite3.connect(path, timeout=10.0, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        if self._conn.execute("PRAGMA user_version").fetchone()[0] == 0:
            self._conn.execute(_SCHEMA)
            self._conn.execute("PRAGMA user_version=1")
        for fid, host, r, b, e in self._conn.execute(
                "SELECT fid, host, requests, bytes, epochs FROM tally WHERE chain_id=? AND contract=?",
                (domain.chain_id, domain.contract)):
            self._counts[(bytes(fid), host)] = [int(r), int(b), int(e)]

    def _now(self):
        return self._clock.seconds() if self._clock is not None else time.time()

    # --- counting (reactor thread, cheap) -------------------------------------------------------

    def _row(self, fid32, host):
        k = (fid32, host)
        row = self._counts.get(k)
        if row is None:
            if len(self._counts) >= self.max_rows:
                raise TallyFull(f"the tally counts {len(self._counts)} (fid, host) pairs, its maximum")
            row = self._counts[k] = [0, 0, 0]
        self._dirty.add(k)
        return row

    def record_call(self, fid32, host, nbytes=0):
        """One successful call of ``fid32`` served by ``host`` (a checksummed address), ``nbytes`` transferred."""
        with self._lock:
            row = self._row(fid32, host)
            row[0] = min(V.UINT64_MAX, row[0] + 1)
            row[1] = min(V.UINT64_MAX, row[1] + max(0, int(nbytes)))

    def record_epoch(self, fid32, host):
        """One uptime epoch of ``host`` for ``fid32`` (count it only when the host passed its challenges)."""
        with self._lock:
            row = self._row(fid32, host)
            row[2] = min(V.UINT64_MAX, row[2] + 1)

    def add(self, fid32, host, requests=0, nbytes=0, epochs=0):
        """Add to the counters of (fid32, host) at once (what a tracker kept for a host before it bound an address)."""
        with self._lock:
            row = self._row(fid32, host)
            for i, n in enumerate((requests, nbytes, epochs)):
                row[i] = min(V.UINT64_MAX, row[i] + max(0, int(n)))

    def keys(self):
        """Every (fid32, host) counted."""
        with self._lock:
            return list(self._counts)

    def counters(self, fid32, host):
        with self._lock:
            return tuple(self._counts.get((fid32, host), (0, 0, 0)))

    # --- durable state and signatures (in a thread) -----------------------------------------------

    def flush(self):
        """Write the counters changed since the last flush. Blocking: call it from a thread."""
        with self._write_lock:
            return self._flush_locked()

    def _flush_locked(self):
        with self._lock:  # a snapshot; counting goes on while it is written
            rows = [(k, tuple(self._counts[k])) for k in self._dirty]
            self._dirty = set()
        if not rows:
            return 0
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            for (fid, host), (r, b, e) in rows:
                self._conn.execute(
                    "INSERT INTO tally (chain_id, contract, fid, host, requests, bytes, epochs) "
                    "VALUES (?,?,?,?,?,?,?) ON CONFLICT (chain_id, contract, fid, host) DO UPDATE SET "
                    "requests=excluded.requests, bytes=excluded.bytes, epochs=excluded.epochs",
                    (self.domain.chain_id, self.domain.contract, fid, host, str(r), str(b), str(e)))
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            with self._lock:
                self._dirty.update(k for k, _ in rows)
            raise
        return len(rows)

    def sign(self, fid32, host):
        """A fresh voucher over the counters of (fid32, host) as just written to SQLite. Blocking: call it
        from a thread. None when nothing was counted for that pair."""
        with self._write_lock:
            with self._lock:
                counts = tuple(self._counts.get((fid32, host), (0, 0, 0)))  # durable already, or dirty
            self._flush_locked()  # these counters (or higher ones) are durable before they are signed
            if counts == (0, 0, 0):
                return None
            v = V.Voucher(fid=fid32, host=host, signer=self.signer, requests=counts[0], bytes=counts[1],
                          epochs=counts[2], expiry=min(V.UINT64_MAX, int(self._now()) + self.expiry_s))
            return V.sign(self.domain, v, self._key)

    def close(self):
        with self._write_lock:
            self._flush_locked()
            self._conn.close()
