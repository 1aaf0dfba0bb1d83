# -*- test-case-name: tests.test_registry -*-
"""
The registry's SQL store: one SQLite file (through ``orb._db.Database``,
so every statement runs on the database's worker thread, never the
reactor's).

The core hands ``save`` a ``StoredState``: a copy of its entries (records
are immutable, so the copy is cheap) taken on the reactor thread.  The
records are encoded to JSON on the worker thread.  ``load`` reads and
validates the rows on the worker thread too, with the same rules as remote
input (``orb.protocol.federation``): a bad row is skipped and counted,
never adopted.  Rows written by another tracker id are ignored.

Schema: ``registry_meta`` (k, v) holds ``tracker_id``, ``seq`` and
``known`` (the digest's JSON object); ``registry_signed`` holds one row per
entity key (its signed record as JCS), with the soft state that survives a
restart (``changed_s``, ``last_seen_s``).  Rows are verified again on load:
a record whose signature fails is skipped.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from orb.protocol import federation as fed

log = Logger()


@attrs.frozen
class StoredEntry:
    key: str
    record: Any
    changed_s: float
    last_seen_s: float | None = None


@attrs.frozen
class StoredState:
    tracker_id: bytes
    seq: int
    known: dict[bytes, int]
    entries: tuple[StoredEntry, ...]


def _upgrade_to_integers(conn: sqlite3.Connection) -> None:
    """Rows from before RFC 8785 payloads: peer ``load`` (0..1 float) becomes
    ``load_permille``, ``rtt_ms`` an integer, and ``known``'s counters decimal
    strings.  Rows that do not parse are left for ``load`` to skip."""
    rows = conn.execute("SELECT key, record FROM registry_entry WHERE record IS NOT NULL").fetchall()
    for key, text in rows:
        if not isinstance(key, str) or not key.startswith("peer:") or not isinstance(text, str):
            continue
        try:
            record = json.loads(text)
        except (ValueError, RecursionError):
            continue
        if not isinstance(record, dict):
            continue
        load = record.pop("load", None)
        if isinstance(load, (int, float)) and "load_permille" not in record:
            record["load_permille"] = int(round(min(max(float(load), 0.0), 1.0) * 1000))
        rtt = record.get("rtt_ms")
        if isinstance(rtt, float):
            record["rtt_ms"] = int(round(min(max(rtt, 0.0), fed.MAX_RTT_MS)))
        try:
            text = fed.canonical_json(record).decode("utf-8")
        except ValueError:
            continue
        conn.execute("UPDATE registry_entry SET record = ? WHERE key = ?", (text, key))
    row = conn.execute("SELECT v FROM registry_meta WHERE k = 'known'").fetchone()
    if row is not None:
        try:
            known = json.loads(row[0])
            known = {k: str(v) for k, v in known.items() if type(v) is int}
            conn.execute("UPDATE registry_meta SET v = ? WHERE k = 'known'", (fed.canonical_json(known).decode(),))
        except (ValueError, TypeError, AttributeError, RecursionError):
            pass


MIGRATIONS = [
    """
    CREATE TABLE registry_meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
    CREATE TABLE registry_entry (
        key TEXT PRIMARY KEY,
        lamport INTEGER NOT NULL,
        origin TEXT NOT NULL,
        record TEXT,
        changed_s REAL NOT NULL,
        last_seen_s REAL
    );
    """,
    _upgrade_to_integers,
    # Signed records (RFC 8.6.1): unsigned rows of the old table cannot be
    # verified, so they are dropped, and with them every origin's progress
    # but our own seq (never reused).
    """
    DROP TABLE registry_entry;
    CREATE TABLE registry_signed (
        key TEXT PRIMARY KEY,
        record TEXT NOT NULL,
        changed_s REAL NOT NULL,
        last_seen_s REAL
    );
    DELETE FROM registry_meta WHERE k IN ('known', 'lamport');
    """,
]


def _write(conn: sqlite3.Connection, state: StoredState) -> None:
    rows = [
        (e.key, fed.canonical_json(e.record.to_dict()).decode("utf-8"), e.changed_s, e.last_seen_s)
        for e in state.entries
    ]
    meta = {
        "tracker_id": state.tracker_id.hex(),
        "seq": str(state.seq),
        "known": fed.canonical_json(fed.known_to_dict(state.known)).decode("ascii"),
    }
    conn.execute("DELETE FROM registry_signed")
    conn.executemany("INSERT INTO registry_signed VALUES (?, ?, ?, ?)", rows)
    conn.executemany("INSERT OR REPLACE INTO registry_meta (k, v) VALUES (?, ?)", meta.items())


def save(db: Any, state: StoredState) -> Deferred[None]:
    """Replace everything in ``db`` (opened with ``MIGRATIONS``) with
    ``state``, in one transaction on the database thread."""
    return db.run(_write, state)


def _counter(text: Any) -> int:
    n = int(text)
    if not 0 <= n <= fed.MAX_STAMP:
        raise ValueError("counter out of range")
    return n


def _read(conn: sqlite3.Connection, tracker_id: bytes, kinds: fed.Kinds) -> tuple[StoredState | None, int, bool]:
    """(state, rows skipped, metadata readable); state None if the file
    belongs to another tracker."""
    meta = dict(conn.execute("SELECT k, v FROM registry_meta").fetchall())
    if meta and meta.get("tracker_id") != tracker_id.hex():
        return None, 0, True
    meta_ok = True
    try:
        seq = _counter(meta.get("seq", 0))
        known_text = meta.get("known")
        known = {}
        if known_text:
            known = fed.known_from_dict(fed.parse_json(known_text.encode("utf-8"), fed.MAX_DIGEST_BYTES, "known"))
    except (ValueError, TypeError, AttributeError, fed.RegistryChangeError):
        seq, known, meta_ok = 0, {}, False
    entries = []
    skipped = 0
    rows = conn.execute("SELECT key, record, changed_s, last_seen_s FROM registry_signed ORDER BY changed_s").fetchall()
    for key, record, changed_s, last_seen_s in rows:
        try:
            if not isinstance(record, str):
                raise fed.RegistryChangeError("row: wrong column types")
            body = fed.parse_json(record.encode("utf-8"), fed.MAX_CHANGE_BYTES, "row")
            entry = fed.SnapshotEntry.from_list([key, body], kinds)
            entry.record.verify()
            entries.append(
                StoredEntry(entry.key, entry.record, float(changed_s), None if last_seen_s is None else float(last_seen_s))
            )
        except (fed.RegistryChangeError, TypeError, ValueError, UnicodeEncodeError):
            skipped += 1
    return StoredState(tracker_id, seq, known, tuple(entries)), skipped, meta_ok


def load(db: Any, tracker_id: bytes, kinds: fed.Kinds = fed.KINDS) -> Deferred[StoredState | None]:
    """The state stored in ``db``, validated on the database thread; None
    if the file belongs to another tracker (logged)."""

    def report(result: tuple[StoredState | None, int, bool]) -> StoredState | None:
        state, skipped, meta_ok = result
        if state is None:
            log.warn("registry database belongs to another tracker; starting empty")
        if not meta_ok:
            log.warn("registry metadata unreadable; sequence numbers restart from the entries")
        if skipped:
            log.info("registry: skipped {count} stored entries", count=skipped)
        return state

    return db.run(_read, tracker_id, kinds).addCallback(report)
