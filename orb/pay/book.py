# -*- test-case-name: tests.test_pay_voucher -*-
"""
A host's voucher book: SQLite (WAL, mode 0600), the latest verified voucher
per (chain, contract, fid, host, signer), refusing one whose counters go
backwards, bounded in rows, with what of each was last claimed.

Blocking and small (each call one short transaction, serialised by a lock):
a daemon calls it through ``deferToThread``; the CLI calls it directly.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterable

import attrs
from eth_utils import to_checksum_address

from orb.pay.voucher import (
    Domain,
    SignedVoucher,
    StaleVoucher,
    Voucher,
    VoucherError,
    _fid_field,
)


class BookFull(VoucherError):
    """The voucher book holds its maximum number of (fid, host, signer) rows."""


MAX_BOOK_ROWS = 100_000

_SCHEMA = """
CREATE TABLE vouchers (
    chain_id INTEGER NOT NULL,
    contract TEXT NOT NULL,
    fid BLOB NOT NULL,
    host TEXT NOT NULL,
    signer TEXT NOT NULL,
    requests TEXT NOT NULL,          -- uint64 as decimal text: SQLite integers are signed 64-bit
    bytes TEXT NOT NULL,
    epochs TEXT NOT NULL,
    expiry INTEGER NOT NULL,
    signature BLOB NOT NULL,
    received_at REAL NOT NULL,
    claimed_requests TEXT NOT NULL DEFAULT '0',
    claimed_bytes TEXT NOT NULL DEFAULT '0',
    claimed_epochs TEXT NOT NULL DEFAULT '0',
    claimed_at REAL,
    claim_tx TEXT,
    pending_since REAL,              -- when the counters first grew past the last claim (NULL: nothing owed)
    PRIMARY KEY (chain_id, contract, fid, host, signer)
);
"""


@attrs.frozen
class BookEntry:
    """A kept voucher and what of it is known to be claimed."""

    signed: SignedVoucher
    received_at: float
    claimed: tuple  # (requests, bytes, epochs) submitted in the last claim recorded
    claimed_at: float | None
    claim_tx: str | None
    pending_since: float | None = None  # when the counters first grew past the last claim

    @property
    def unclaimed(self):
        """Whether a claim would pay more than the last one recorded (some counter grew)."""
        return any(c > k for c, k in zip(self.signed.voucher.counters(), self.claimed))


def _open_private(path):
    """Create ``path`` mode 0600 (parent 0700) before SQLite does, so the database, its WAL and
    its shared-memory file (which SQLite gives the database's mode) are the owner's alone."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


class VoucherBook:
    """
    The latest voucher per (chain, contract, fid, host, signer), kept by a host.

    Synchronous and small: each call is one short transaction. From the
    reactor thread, wrap calls with ``orb._db.Database``-style threads or
    ``deferToThread`` (the phase-2 host does); the CLI calls it directly.
    """

    def __init__(self, path, max_rows=MAX_BOOK_ROWS, clock=None):
        self.path = path
        self.max_rows = max_rows
        self._clock = clock
        if path != ":memory:":
            _open_private(path)
        self._lock = threading.RLock()  # one call at a time, whichever thread it comes from
        self._conn = sqlite3.connect(path, timeout=10.0, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        if self._conn.execute("PRAGMA user_version").fetchone()[0] == 0:
            with self._tx():
                self._conn.execute(_SCHEMA)
                self._conn.execute("PRAGMA user_version=1")

    def _now(self):
        return self._clock.seconds() if self._clock is not None else time.time()

    @contextlib.contextmanager
    def _tx(self):
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def close(self):
        with self._lock:
            self._conn.close()

    def add(self, signed, host=None):
        """
        Verify and keep ``signed`` if it is newer than what is kept for its key. Returns True when
        stored, False when it equals the kept one. Raises BadSignature, Expired, StaleVoucher (a
        counter went down), BookFull, or VoucherError when ``host`` is given and is not the
        voucher's host.
        """
        now = self._now()
        signed.verify(now=now)
        v = signed.voucher
        if host is not None and to_checksum_address(host) != v.host:
            raise VoucherError(f"this voucher pays {v.host}, not this host {to_checksum_address(host)}")
        key = (signed.domain.chain_id, signed.domain.contract, v.fid, v.host, v.signer)
        with self._tx():
            row = self._conn.execute(
                "SELECT requests, bytes, epochs FROM vouchers WHERE chain_id=? AND contract=? AND fid=? "
                "AND host=? AND signer=?", key).fetchone()
            if row is None:
                count = self._conn.execute("SELECT COUNT(*) FROM vouchers").fetchone()[0]
                if count >= self.max_rows:
                    raise BookFull(f"the voucher book holds {count} vouchers, its maximum: claim and prune")
                self._conn.execute(
                    "INSERT INTO vouchers (chain_id, contract, fid, host, signer, requests, bytes, epochs, "
                    "expiry, signature, received_at, pending_since) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    (*key, str(v.requests), str(v.bytes), str(v.epochs), v.expiry, signed.signature, now, now))
                return True
            kept = tuple(int(x) for x in row)
            if any(new < old for new, old in zip(v.counters(), kept)):
                raise StaleVoucher(f"counters {v.counters()} are lower than the kept {kept} "
                                   "(requests, bytes, epochs) for this fid and signer")
            if v.counters() == kept:
                return False
            self._conn.execute(
                "UPDATE vouchers SET requests=?, bytes=?, epochs=?, expiry=?, signature=?, received_at=?, "
                "pending_since=COALESCE(pending_since, ?) "
                "WHERE chain_id=? AND contract=? AND fid=? AND host=? AND signer=?",
                (str(v.requests), str(v.bytes), str(v.epochs), v.expiry, signed.signature, now, now, *key))
            return True

    def _entries(self, where="", args=()):
        with self._lock:
            rows = self._conn.execute(
                "SELECT chain_id, contract, fid, host, signer, requests, bytes, epochs, expiry, signature, "
                "received_at, claimed_requests, claimed_bytes, claimed_epochs, claimed_at, claim_tx, pending_since "
                "FROM vouchers "
                + where + " ORDER BY received_at, fid, signer", args).fetchall()
        out = []
        for r in rows:
            signed = SignedVoucher(
                domain=Domain(chain_id=r[0], contract=r[1]),
                voucher=Voucher(fid=r[2], host=r[3], signer=r[4], requests=int(r[5]), bytes=int(r[6]),
                                epochs=int(r[7]), expiry=r[8]),
                signature=r[9])
            out.append(BookEntry(signed=signed, received_at=r[10], claimed=(int(r[11]), int(r[12]), int(r[13])),
                                 claimed_at=r[14], claim_tx=r[15], pending_since=r[16]))
        return out

    def latest(self, fid=None, signer=None):
        """Every kept voucher (optionally of one 32-byte fid and/or one signer), oldest first."""
        clauses, args = [], []
        if fid is not None:
            clauses.append("fid=?")
            args.append(_fid_field(fid))
        if signer is not None:
            clauses.append("signer=?")
            args.append(to_checksum_address(signer))
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        return self._entries(where, tuple(args))

    def get(self, domain, fid, host, signer):
        rows = self._entries("WHERE chain_id=? AND contract=? AND fid=? AND host=? AND signer=?",
                             (domain.chain_id, domain.contract, _fid_field(fid), to_checksum_address(host),
                              to_checksum_address(signer)))
        return rows[0] if rows else None

    def claimable(self, domain=None, limit=50, now=None):
        """Unexpired vouchers whose counters grew since the last recorded claim, oldest first, at most
        ``limit`` (a batch)."""
        now = self._now() if now is None else now
        where, args = "WHERE expiry >= ?", [int(now)]
        if domain is not None:
            where += " AND chain_id=? AND contract=?"
            args += [domain.chain_id, domain.contract]
        return [e for e in self._entries(where, tuple(args)) if e.unclaimed][:limit]

    def mark_claimed(self, signed_vouchers: Iterable[SignedVoucher], tx_hash):
        """Record that these vouchers were submitted in the transaction ``tx_hash`` (mined, status 1)."""
        now = self._now()
        with self._tx():
            for s in signed_vouchers:
                v = s.voucher
                self._conn.execute(
                    "UPDATE vouchers SET claimed_requests=?, claimed_bytes=?, claimed_epochs=?, claimed_at=?, "
                    "claim_tx=?, pending_since=CASE WHEN requests=? AND bytes=? AND epochs=? THEN NULL ELSE ? END "
                    "WHERE chain_id=? AND contract=? AND fid=? AND host=? AND signer=?",
                    (str(v.requests), str(v.bytes), str(v.epochs), now, tx_hash,
                     str(v.requests), str(v.bytes), str(v.epochs), now,  # a newer voucher came meanwhile: owed again
                     s.domain.chain_id, s.domain.contract, v.fid, v.host, v.signer))

    def prune_expired(self, now=None):
        """Forget vouchers that expired (they can no longer be claimed). Returns how many."""
        now = self._now() if now is None else now
        with self._tx():
            return self._conn.execute("DELETE FROM vouchers WHERE expiry < ?", (int(now),)).rowcount

    def __len__(self):
        with self._lock:
            return self._conn.execute("SELECT COUNT(*) FROM vouchers").fetchone()[0]
