# -*- test-case-name: tests.test_names -*-
"""
Names, updates and deprecation at a tracker (RFC 9.10).

``Names`` takes an owner's NAME and DEPRECATE (answering STATEMENT_ACK),
puts what it accepts into the registry (kinds ``name`` and ``deprecation``,
so the statements federate), keeps the bounded history of every name
(``NameHistory``, filled from every NAME the registry takes in, local,
federated or from a snapshot), pushes deprecations to the hosts of the fid
that have a session here, and answers what the router, the replication
manager, the gateway and DNS ask: ``fid_status``, ``is_gone``,
``resolve``, ``serving_fid``, ``names_of_owner``, ``history``.

``gone`` is never stored: it is computed from the clock each time
(``0 < sunset <= clock.seconds()``).

The history is persisted by ``save(db)``/``load(db)`` in its own SQLite file
(``MIGRATIONS``), rows written on the database thread, like the registry's
store (orb.tracker.store).
"""

import collections

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from orb.protocol import federation as fed
from orb.protocol import fid as fidmod
from orb.protocol import messages as m
from orb.protocol import names as nm
from orb.protocol.codes import ErrorCode
from orb.protocol.messages import MessageType
from orb.tracker.registry import RegistryFull

log = Logger()

MAX_HISTORY = 64  # versions kept per (owner, name)
MAX_HISTORY_ROWS = 100_000  # versions kept in all: past it the longest history loses its oldest
PUSH_TIMEOUT_S = 10.0
MAX_PUSHES_IN_FLIGHT = 256
MAX_PUSHED_PER_HOST = 2048  # (fid, seq) remembered as told, per host session
NAMES_FILE = "names.sqlite"


@attrs.frozen
class FidStatus:
    """The owner's deprecation of a fid, as this tracker holds it now."""

    fid: str
    owner_key: bytes
    deprecated: bool
    successor: str | None  # fid text
    sunset: int  # unix seconds, 0: none
    gone: bool  # deprecated and the clock is at or past the sunset
    seq: int

    def to_dict(self):
        """For JSON (the REST API, `orb info`)."""
        return {"fid": self.fid, "owner": self.owner_key.hex(), "deprecated": self.deprecated,
                "successor": self.successor, "sunset": self.sunset, "gone": self.gone, "seq": self.seq}


@attrs.frozen
class HistoryEntry:
    """One NAME of a name as it was taken in."""

    seq: int
    fid: str
    deprecated: bool
    successor: str | None
    sunset: int
    received_at: float


@attrs.frozen
class VersionView:
    """One version of a name with its status now: the NAME's own flags merged with the fid's
    deprecation (RFC 9.10, "Resolving a name")."""

    seq: int
    fid: str
    deprecated: bool
    successor: str | None
    sunset: int
    gone: bool
    received_at: float

    def to_dict(self):
        """For JSON: ``status`` is "gone", "deprecated" or "active"."""
        status = "gone" if self.gone else "deprecated" if self.deprecated else "active"
        return {"seq": self.seq, "fid": self.fid, "status": status, "deprecated": self.deprecated,
                "successor": self.successor, "sunset": self.sunset, "gone": self.gone,
                "received_at": self.received_at}


@attrs.frozen
class NameView:
    """A name as this tracker resolves it: its newest NAME (``fid``, ``seq``) with that version's
    status now, ``history`` newest first as (seq, fid text, deprecated), and ``serving``: the version
    to call (None: none can be)."""

    owner_key: bytes
    owner_label: str
    name: str
    fid: str
    seq: int
    deprecated: bool
    successor: str | None
    sunset: int
    gone: bool
    history: tuple
    serving: str | None
    versions: tuple = ()  # VersionView, newest first

    def to_dict(self):
        """For JSON (the REST API, `orb info`): the name, its newest version's status, the version served,
        and every version kept, newest first."""
        return {"name": self.name, "owner": self.owner_label, "owner_key": self.owner_key.hex(), "fid": self.fid,
                "seq": self.seq, "deprecated": self.deprecated, "successor": self.successor, "sunset": self.sunset,
                "gone": self.gone, "serving": self.serving, "history": [v.to_dict() for v in self.versions]}


class NameHistory:
    """The bounded history of every name: (owner key, name) -> entries, newest seq first.

    ``dirty`` holds the names changed since the last ``save``."""

    def __init__(self, max_per_name=MAX_HISTORY, max_rows=MAX_HISTORY_ROWS):
        self.max_per_name = max_per_name
        self.max_rows = max_rows
        self._entries = {}  # (owner key, name) -> list[HistoryEntry], newest first
        self._rows = 0
        self.dirty = set()

    def __len__(self):
        return self._rows

    def keys(self):
        return list(self._entries)

    def entries(self, owner_key, name):
        return tuple(self._entries.get((owner_key, name), ()))

    def add(self, owner_key, name, entry):
        """Keep ``entry`` unless its seq is held already, or older than the 64 kept; True if kept."""
        key = (owner_key, name)
        kept = self._entries.setdefault(key, [])
        if any(e.seq == entry.seq for e in kept):
            return False
        if len(kept) >= self.max_per_name and entry.seq < kept[-1].seq:
            return False
        kept.append(entry)
        kept.sort(key=lambda e: e.seq, reverse=True)
        self._rows += 1
        if len(kept) > self.max_per_name:
            del kept[self.max_per_name:]
            self._rows = sum(len(v) for v in self._entries.values())
        while self._rows > self.max_rows:
            longest = max(self._entries, key=lambda k: len(self._entries[k]))
            self._entries[longest].pop()
            self._rows -= 1
            self.dirty.add(longest)
        self.dirty.add(key)
        return True

    # -- persistence -----------------------------------------------------------------

    def save(self, db):
        """Write the names changed since the last save (their rows replaced), on the database thread."""
        dirty, self.dirty = self.dirty, set()
        rows = {key: self.entries(*key) for key in dirty}
        return db.run(_write_history, rows)

    @classmethod
    def load(cls, db, **kw):
        """A history rebuilt from ``db``; rows that do not validate are skipped."""

        def build(rows):
            history = cls(**kw)
            skipped = 0
            for owner_key, name, seq, fid, deprecated, successor, sunset, received_at in rows:
                try:
                    entry = _entry_from_row(owner_key, name, seq, fid, deprecated, successor, sunset, received_at)
                except (ValueError, TypeError, fidmod.FidError):
                    skipped += 1
                    continue
                history.add(bytes(owner_key), name, entry)
            history.dirty.clear()
            if skipped:
                log.info("name history: skipped {count} stored rows", count=skipped)
            return history

        return db.run(_read_history).addCallback(build)


MIGRATIONS = [
    """
    CREATE TABLE name_history (
        owner_key BLOB NOT NULL,
        name TEXT NOT NULL,
        seq INTEGER NOT NULL,
        fid TEXT NOT NULL,
        deprecated INTEGER NOT NULL,
        successor TEXT NOT NULL,
        sunset INTEGER NOT NULL,
        received_at REAL NOT NULL,
        PRIMARY KEY (owner_key, name, seq)
    );
    """,
]


def _write_history(conn, rows):
    for (owner_key, name), entries in rows.items():
        conn.execute("DELETE FROM name_history WHERE owner_key = ? AND name = ?", (owner_key, name))
        conn.executemany(
            "INSERT INTO name_history VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(owner_key, name, e.seq, e.fid, int(e.deprecated), e.successor or "", e.sunset, e.received_at)
             for e in entries],
        )


def _read_history(conn):
    return conn.execute(
        "SELECT owner_key, name, seq, fid, deprecated, successor, sunset, received_at FROM name_history "
        f"ORDER BY seq DESC LIMIT {MAX_HISTORY_ROWS}"
    ).fetchall()


def _entry_from_row(owner_key, name, seq, fid, deprecated, successor, sunset, received_at):
    if not isinstance(owner_key, bytes) or len(owner_key) != m.PUBLIC_KEY_BYTES:
        raise ValueError("owner key")
    nm.check_name(name)
    fidmod.from_text(fid)
    if successor:
        fidmod.from_text(successor)
    if not (isinstance(seq, int) and 1 <= seq <= nm.MAX_SEQ and isinstance(sunset, int) and 0 <= sunset):
        raise ValueError("seq or sunset")
    return HistoryEntry(seq, fid, bool(deprecated), successor or None, sunset, float(received_at))


def load_history(db, key=None):
    """The tracker's Store loader: (db, node key) -> Deferred[NameHistory]."""
    return NameHistory.load(db)


def save_history(history, db):
    """The tracker's Store saver."""
    return history.save(db)


def _ack(status, seq, text=""):
    return m.StatementAck(status=int(status), seq=seq, text=text[: m.MAX_ERROR_TEXT_BYTES])


def _same_statement(held, message):
    """True when ``message`` is exactly the statement ``held`` (a replay), TLVs aside."""
    return held.to_message() == attrs.evolve(message, ext=())


class Names:
    """See the module docstring. ``table`` (the session table) is where deprecations are pushed to
    hosts; ``local_id`` is this tracker's node id (the hosts homed here are the ones it tells)."""

    def __init__(self, clock, registry, table=None, local_id=None, history=None, push_timeout_s=PUSH_TIMEOUT_S):
        self.clock = clock
        self.registry = registry
        self.table = table
        self.local_id = local_id if local_id is not None else registry.tracker_id
        self.name_history = history if history is not None else NameHistory()
        self.push_timeout_s = push_timeout_s
        self._by_owner = collections.defaultdict(set)  # owner label -> names
        self._pushed = {}  # host node id -> {fid: seq of the deprecation sent}
        self._to_push = {}  # (host node id, fid) -> DeprecationRecord, sent at the next turn
        self._pushes_in_flight = 0
        self.counts = collections.Counter()
        for record in registry.records(fed.NAME.name):
            self._name_taken(record, at=0.0)
        registry.watch_records(self._taken)

    def handlers(self):
        return {MessageType.NAME: self.on_name, MessageType.DEPRECATE: self.on_deprecate}

    # -- intake ---------------------------------------------------------------------

    def on_name(self, session, message, request_id):
        ack = self.take_name(message)
        self._answer(session, ack, request_id, "NAME", getattr(message, "name", "")[:63])

    def on_deprecate(self, session, message, request_id):
        ack = self.take_deprecate(message)
        try:
            subject = fidmod.to_text(message.fid)[:16]
        except fidmod.FidError:
            subject = "?"
        self._answer(session, ack, request_id, "DEPRECATE", subject)

    def _answer(self, session, ack, request_id, what, subject):
        self.counts[f"{what.lower()}_{'taken' if ack.status == 0 else 'refused'}"] += 1
        if ack.status:
            log.info("{what} for {subject} refused: {text}", what=what, subject=subject, text=ack.text[:120])
        if request_id:
            session.send(ack, response_to=request_id)

    def _owned_function(self, message, what):
        """(function record, None) or (None, refusal ack)."""
        fid = fidmod.to_text(message.fid)
        function = self.registry.function(fid)
        if function is None:
            return None, _ack(ErrorCode.NOT_FOUND, 0, f"no function {fid[:20]}... is deployed")
        if function.owner != message.owner_key:
            return None, _ack(ErrorCode.DENIED, 0, f"{what}: the signer is not the owner of {fid[:20]}...")
        return function, None

    def take_name(self, message) -> m.StatementAck:
        """Check and take in an owner's NAME (RFC 9.10); the STATEMENT_ACK to answer."""
        try:
            nm.check_name_record(message)
        except nm.StatementError as e:
            return _ack(e.code, 0, e.text)
        _, refusal = self._owned_function(message, "NAME")
        if refusal is not None:
            return refusal
        record = fed.NameRecord.from_message(message)
        held = self.registry.stored(fed.NAME.name, record.ident)
        held_seq = held.seq if held is not None else 0
        if held is not None and _same_statement(held, message):
            return _ack(0, held_seq, "already held")
        if self.is_gone(record.fid):
            return _ack(ErrorCode.GONE, held_seq, f"{record.fid[:20]}... is past its sunset")
        if held is not None and message.seq <= held.seq:
            return _ack(ErrorCode.STALE, held_seq, f"seq {message.seq} is not above the {held.seq} held")
        return self._accept(record, held_seq)

    def take_deprecate(self, message) -> m.StatementAck:
        """Check and take in an owner's DEPRECATE (RFC 9.10); the STATEMENT_ACK to answer."""
        try:
            nm.check_deprecate(message)
        except nm.StatementError as e:
            return _ack(e.code, 0, e.text)
        _, refusal = self._owned_function(message, "DEPRECATE")
        if refusal is not None:
            return refusal
        record = fed.DeprecationRecord.from_message(message)
        held = self.registry.stored(fed.DEPRECATION.name, record.ident)
        held_seq = held.seq if held is not None else 0
        now = self.clock.seconds()
        if held is not None:
            if _same_statement(held, message):
                return _ack(0, held_seq, "already held")
            if held.deprecated and nm.is_gone(held.sunset, now):
                return _ack(ErrorCode.GONE, held_seq, f"{record.fid[:20]}... is past its sunset: it stays gone")
            if message.seq <= held.seq:
                return _ack(ErrorCode.STALE, held_seq, f"seq {message.seq} is not above the {held.seq} held")
        if message.deprecated and 0 < message.sunset < now:
            return _ack(ErrorCode.INVALID, held_seq, "the sunset is in the past")
        return self._accept(record, held_seq)

    def _accept(self, record, held_seq):
        try:
            self.registry.accept(record)
        except RegistryFull as e:
            return _ack(ErrorCode.BUSY, held_seq, str(e)[:200])
        except fed.RegistryChangeError as e:
            return _ack(ErrorCode.INVALID, held_seq, str(e)[:200])
        return _ack(0, record.seq)

    # -- what the registry takes in -------------------------------------------------------

    def _taken(self, spec, record):
        if spec.name == fed.NAME.name:
            self._name_taken(record, self.clock.seconds())
        elif spec.name == fed.DEPRECATION.name:
            self._deprecation_taken(record)
        elif spec.name == fed.FUNCTION.name:
            self._function_taken(record)
        elif spec.name == fed.PEER.name:
            self._peer_taken(record)

    def _name_taken(self, record, at):
        label = nm.owner_label(record.owner_key)
        self._by_owner[label].add(record.name)
        self.name_history.add(record.owner_key, record.name, HistoryEntry(
            record.seq, record.fid, record.deprecated, record.successor or None, record.sunset, at))

    def _deprecation_taken(self, record):
        if self._effective(record.fid) is not record:
            return  # not the owner's: it means nothing
        for peer in self._local_hosts(record.fid):
            self._queue_push(peer.node_id, record)

    def _function_taken(self, function):
        record = self._effective(function.fid)
        if record is not None:
            for peer in self._local_hosts(function.fid):
                self._queue_push(peer.node_id, record)

    def _peer_taken(self, peer):
        if peer.home != self.local_id or not peer.connected:
            return
        sent = self._pushed.get(peer.node_id, {})
        for fid in peer.function_map:
            record = self._effective(fid)
            if record is not None and sent.get(fid) != record.seq:
                self._queue_push(peer.node_id, record)

    # -- pushes to hosts ----------------------------------------------------------------

    def _local_hosts(self, fid):
        return [p for p in self.registry.peers() if p.home == self.local_id and fid in p.function_map]

    def _queue_push(self, node_id, record):
        if self.table is None:
            return
        if not self._to_push:
            self.clock.callLater(0, self._push_queued)
        self._to_push[(node_id, record.fid)] = record

    def _push_queued(self):
        queued, self._to_push = self._to_push, {}
        for (node_id, fid), record in queued.items():
            session = self.table.get(node_id)
            if session is None or not session.ready or self._pushes_in_flight >= MAX_PUSHES_IN_FLIGHT:
                continue  # it learns at its next ANNOUNCE
            sent = self._pushed.setdefault(node_id, {})
            if sent.get(fid) == record.seq:
                continue
            if len(sent) >= MAX_PUSHED_PER_HOST:
                sent.clear()  # bounded: at worst a host is told again what it holds (it answers 0)
            sent[fid] = record.seq
            self._pushes_in_flight += 1
            self.counts["deprecations_pushed"] += 1
            d = session.request(record.to_message(), timeout_s=self.push_timeout_s)
            d.addBoth(self._pushed_answer, node_id, fid, record.seq)

    def _pushed_answer(self, answer, node_id, fid, seq):
        self._pushes_in_flight -= 1
        if isinstance(answer, m.StatementAck) and answer.status in (0, int(ErrorCode.STALE)):
            return None
        if isinstance(answer, m.StatementAck):
            why = answer.text
        elif hasattr(answer, "getErrorMessage"):
            why = answer.getErrorMessage()
        else:
            why = type(answer).__name__
        log.info("host {node} did not take the deprecation of {fid}: {why}", node=node_id.hex()[:16], fid=fid[:16],
                 why=str(why)[:120])
        sent = self._pushed.get(node_id)
        if sent is not None and sent.get(fid) == seq:
            del sent[fid]  # try again at its next ANNOUNCE
        return None

    def session_lost(self, session):
        self._pushed.pop(session.node_id, None)

    # -- queries ---------------------------------------------------------------------

    def _effective(self, fid):
        """The owner's deprecation record of ``fid``: the one signed by its function's owner."""
        function = self.registry.function(fid)
        if function is None:
            return None
        return self.registry.stored(fed.DEPRECATION.name, f"{fid}.{nm.owner_label(function.owner)}")

    def fid_status(self, fid_text) -> FidStatus | None:
        """The fid's deprecation as its owner stated it last, with ``gone`` from the clock; None when the
        owner never deprecated it (or the fid is unknown)."""
        try:
            record = self._effective(fid_text)
        except (TypeError, ValueError):
            return None
        if record is None:
            return None
        return FidStatus(fid=record.fid, owner_key=record.owner_key, deprecated=record.deprecated,
                         successor=record.successor or None, sunset=record.sunset,
                         gone=record.deprecated and nm.is_gone(record.sunset, self.clock.seconds()), seq=record.seq)

    def is_gone(self, fid_text) -> bool:
        status = self.fid_status(fid_text)
        return status is not None and status.gone

    def _name_record(self, owner_label, name):
        if not nm.is_owner_label(owner_label) or not isinstance(name, str):
            return None
        try:
            nm.check_name(name)
        except ValueError:
            return None
        return self.registry.stored(fed.NAME.name, f"{name}.{owner_label}")

    def _version(self, owner_key, entry, now):
        function = self.registry.function(entry.fid)
        if function is not None and function.owner != owner_key:
            return None  # a name points only at its owner's functions
        status = self.fid_status(entry.fid)
        fid_deprecated = status is not None and status.deprecated
        deprecated = entry.deprecated or fid_deprecated
        successor = (status.successor if fid_deprecated and status.successor else None) or entry.successor
        if fid_deprecated and status.sunset:
            sunset = status.sunset
        else:
            sunset = entry.sunset if entry.deprecated else 0
        gone = (status is not None and status.gone) or (entry.deprecated and nm.is_gone(entry.sunset, now))
        return VersionView(entry.seq, entry.fid, deprecated, successor, sunset, gone, entry.received_at)

    def history(self, owner_label, name) -> tuple:
        """The versions of a name, newest first (VersionView, at most 64), with their status now; ()
        when the name is unknown."""
        record = self._name_record(owner_label, name)
        if record is None:
            return ()
        entries = list(self.history_entries(record))
        now = self.clock.seconds()
        return tuple(v for v in (self._version(record.owner_key, e, now) for e in entries) if v is not None)

    def history_entries(self, record):
        entries = self.name_history.entries(record.owner_key, record.name)
        if not any(e.seq == record.seq for e in entries):
            newest = HistoryEntry(record.seq, record.fid, record.deprecated, record.successor or None, record.sunset,
                                  0.0)
            entries = tuple(sorted((*entries, newest), key=lambda e: e.seq, reverse=True))[:MAX_HISTORY]
        return entries

    def resolve(self, owner_label, name) -> NameView | None:
        """The name ``<name>.<owner_label>`` as this tracker holds it; None when unknown."""
        record = self._name_record(owner_label, name)
        if record is None:
            return None
        versions = self.history(owner_label, name)
        now = self.clock.seconds()
        top = self._version(record.owner_key, HistoryEntry(record.seq, record.fid, record.deprecated,
                                                            record.successor or None, record.sunset, 0.0), now)
        if top is None:  # the newest NAME points at someone else's function: shown as gone
            top = VersionView(record.seq, record.fid, True, None, 0, True, 0.0)
        return NameView(owner_key=record.owner_key, owner_label=owner_label, name=name, fid=record.fid,
                        seq=record.seq, deprecated=top.deprecated, successor=top.successor, sunset=top.sunset,
                        gone=top.gone, history=tuple((v.seq, v.fid, v.deprecated) for v in versions),
                        serving=_serving(versions), versions=versions)

    def serving_fid(self, owner_label, name) -> str | None:
        """The version to call: the newest neither deprecated nor gone, else the newest not gone."""
        view = self.resolve(owner_label, name)
        return None if view is None else view.serving

    def names_of_owner(self, owner_label) -> list:
        """Every name of an owner this tracker holds, resolved (NameView), sorted by name."""
        views = (self.resolve(owner_label, name) for name in sorted(self._by_owner.get(owner_label, ())))
        return [v for v in views if v is not None]

    def owner_key_of(self, owner_label) -> bytes | None:
        """The owner key behind a label, when this tracker holds a name of it."""
        for name in self._by_owner.get(owner_label, ()):
            record = self._name_record(owner_label, name)
            if record is not None:
                return record.owner_key
        return None

    def save(self, db) -> Deferred:
        return self.name_history.save(db)


def _serving(versions):
    for v in versions:
        if not v.deprecated and not v.gone:
            return v.fid
    for v in versions:
        if not v.gone:
            return v.fid
    return None
