# -*- test-case-name: tests.test_packages -*-
"""
The content-addressed package store that both roles keep: a peer for the
functions it hosts, a tracker for the functions it accepted by DEPLOY.

Layout, under a daemon's data dir::

    packages.sqlite            the index (WAL, orb._db; mode 0600): one row per package, one per partial
                               download, the owner key of a package where the OFFER named one (RFC 10.7),
                               a package's secrets sealed to this host (RFC 9.12), and the owner's
                               DEPRECATE of a fid, pushed by a tracker (RFC 9.10)
    packages/<fid text>        a verified package, named by its fid
    packages/partial/<fid>     a download in progress, kept apart until it verifies

Rules:

- Only verified bytes are stored under a fid: ``put`` and ``Partial.finish``
  compare the SHA-256 of what they got with the fid, and refuse a mismatch.
  Reads, proofs and ``path`` serve verified packages only.
- Bounded: at most ``max_bytes`` (verified packages plus the full size of
  every partial download, reserved at ``begin``) and ``max_packages``
  packages; at most MAX_PARTIALS downloads at once.
- A restart keeps everything: verified packages, and partial downloads with
  the bytes they hold, so a fetch resumes where it stopped.
- On open the whole store is re-verified. A package whose file is missing
  or does not hash to its fid is dropped and listed in ``dropped`` (and
  logged) so that its owner can fetch it again; a verified file that lost
  its index row is adopted.

Threads: SQLite runs on its own worker thread (orb._db). Every file
operation (reads, appends, hashing for verification and proofs, renames)
runs on one more worker thread that the store owns, so the reactor never
blocks on a 64 MiB file; one thread keeps the appends of a download in
order. ``inline=True`` runs both on the calling thread (unit tests).
"""

import hashlib
import os

import attrs
from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from orb._db import Database
from orb.net.logs import orb_logger
from orb.protocol import fid as fidmod
from orb.protocol import messages as m
from orb.protocol import package as pkg
from orb.protocol.errors import ProtocolError

log = orb_logger()

INDEX_FILE = "packages.sqlite"
PACKAGES_DIR = "packages"
PARTIAL_DIR = "partial"
DEFAULT_MAX_BYTES = 1024 * 1024 * 1024  # 1 GiB
DEFAULT_MAX_PACKAGES = 10_000
MAX_PARTIALS = 16
PARTIAL_TTL_S = 24 * 3600  # a partial download untouched this long is dropped on open
MAX_READ_BYTES = 1024 * 1024  # the most one read (one FETCH) returns: RFC 5.15
HASH_BLOCK_BYTES = 1024 * 1024

MIGRATIONS = [
    """
    CREATE TABLE packages (
        fid BLOB PRIMARY KEY,
        size INTEGER NOT NULL,
        version INTEGER NOT NULL,
        added_at INTEGER NOT NULL
    );
    CREATE TABLE partials (
        fid BLOB PRIMARY KEY,
        size INTEGER NOT NULL,
        started_at INTEGER NOT NULL
    );
    """,
    # The owner key an OFFER named for a hosted function (the owner_key TLV), to check LOGS (RFC 10.7).
    # A store from before this has no row for its packages: their owner is unknown until offered again.
    """
    CREATE TABLE owners (
        fid BLOB PRIMARY KEY,
        owner_key BLOB NOT NULL
    );
    """,
    # Capability token revocations a tracker pushed (RFC 9.11): checked on every call of a private function.
    """
    CREATE TABLE revocations (
        token_id BLOB NOT NULL,
        issuer BLOB NOT NULL,
        not_after INTEGER NOT NULL,
        sig BLOB NOT NULL,
        PRIMARY KEY (token_id, issuer)
    );
    """,
    # A held function's secrets, sealed to this host (RFC 9.12): only the sealed bytes and the owner's
    # signature; they are opened for each call. Dropping the package drops them.
    """
    CREATE TABLE secrets (
        fid BLOB PRIMARY KEY,
        owner_key BLOB NOT NULL,
        seq INTEGER NOT NULL,
        sealed BLOB NOT NULL,
        signature BLOB NOT NULL
    );
    """,
    # The owner's DEPRECATE of a fid, as a home tracker pushed it (RFC 9.10): the message body, checked
    # again on open. Kept after the package is dropped at the sunset, so that the fid stays gone here.
    """
    CREATE TABLE deprecations (
        fid BLOB PRIMARY KEY,
        body BLOB NOT NULL,
        received_at INTEGER NOT NULL
    );
    """,
]
MAX_DEPRECATIONS = 4096  # DEPRECATE records kept; past it, those of fids no longer held go first, oldest first


class StoreError(Exception):
    """Base of what the store refuses."""


class NotHeld(StoreError, KeyError):
    """The store holds no verified package of this fid."""


class OutOfRange(StoreError, ValueError):
    """A read outside the package, or of a length the store does not serve."""


class StoreFull(StoreError):
    """Storing this would pass the store's bounds."""


class VerifyError(StoreError):
    """The bytes do not hash to the fid (or are not the size promised)."""


@attrs.frozen
class Entry:
    """One verified package the store holds."""

    fid: bytes
    size: int
    version: int = 1
    added_at: int = 0


@attrs.frozen(repr=False)
class SealedSecret:
    """A function's secrets as this host keeps them (RFC 9.12): sealed to its node key, owner-signed."""

    owner_key: bytes
    seq: int
    sealed: bytes
    signature: bytes

    def __repr__(self):
        return f"<SealedSecret seq={self.seq} {len(self.sealed)} sealed bytes>"


def _owner_only(path):
    """Make the index readable by this user only (SQLite gives its -wal and -shm files the same mode)."""
    for p in (path, path + "-wal", path + "-shm"):
        try:
            os.chmod(p, 0o600)
        except FileNotFoundError:
            pass


class _Io:
    """Runs file work on the store's own worker thread, or inline."""

    def __init__(self, reactor, inline):
        self.reactor = reactor
        self.pool = None
        self._trigger = None
        if not inline:
            self.pool = ThreadPool(minthreads=1, maxthreads=1, name="orb-packages")
            self.pool.start()
            self._trigger = reactor.addSystemEventTrigger("during", "shutdown", self.stop)

    def run(self, fn, *args):
        if self.pool is None:
            return defer.maybeDeferred(fn, *args)
        return deferToThreadPool(self.reactor, self.pool, fn, *args)

    def stop(self):
        if self.pool is not None:
            pool, self.pool = self.pool, None
            pool.stop()
            if self._trigger is not None:
                try:
                    self.reactor.removeSystemEventTrigger(self._trigger)
                except (ValueError, KeyError):
                    pass  # called by that very trigger


# --- file work: these run on the worker thread --------------------------------------


def _hash_file(path, nonce=None):
    """(SHA-256 of the file, SHA-256 of nonce || file or None, size), streamed."""
    plain = hashlib.sha256()
    salted = hashlib.sha256(nonce) if nonce is not None else None
    size = 0
    with open(path, "rb") as f:
        while True:
            block = f.read(HASH_BLOCK_BYTES)
            if not block:
                break
            size += len(block)
            plain.update(block)
            if salted is not None:
                salted.update(block)
    return plain.digest(), salted.digest() if salted is not None else None, size


def _read_range(path, offset, length):
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


def _write_new(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _unlink(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _manifest_of(path):
    """The bytes of the package's orb-manifest.json, found by walking the ustar headers (RFC 9.2)."""
    with open(path, "rb") as f:
        while True:
            header = f.read(pkg.BLOCK)
            if len(header) < pkg.BLOCK or header == b"\x00" * pkg.BLOCK:
                raise VerifyError("the package holds no orb-manifest.json")
            field = header[124:135]
            if not field.isdigit():
                raise VerifyError("a package header has a bad size field")
            size = int(field, 8)
            name = header[0:100].rstrip(b"\x00")
            prefix = header[345:500].rstrip(b"\x00")
            if not prefix and name == pkg.MANIFEST_NAME.encode():
                if size > 1 << 20:
                    raise VerifyError("the package's orb-manifest.json is too large")
                return f.read(size)
            f.seek(size + (-size % pkg.BLOCK), os.SEEK_CUR)


class PackageStore:
    """Verified packages by fid, on disk and indexed; see the module docstring."""

    def __init__(self, db, io, root, clock, *, max_bytes, max_packages):
        self._sealed = {}  # fid -> SealedSecret of a held package (RFC 9.12)
        self.db = db
        self.io = io
        self.root = root  # <data_dir>/packages
        self.clock = clock
        self.max_bytes = max_bytes
        self.max_packages = max_packages
        self._entries = {}  # fid -> Entry
        self._partials = {}  # fid -> Partial
        self._owners = {}  # fid -> the owner's Ed25519 public key, for held packages whose OFFER named it
        self._deprecations = {}  # fid -> (Deprecate, received_at), at most MAX_DEPRECATIONS
        self.dropped = []  # (fid, reason) of packages dropped by the check on open
        self.removed_listeners = []  # callables(fid, reason): a verified package left the store

    # --- opening ----------------------------------------------------------------------

    @classmethod
    def open(cls, reactor, data_dir, *, max_bytes=DEFAULT_MAX_BYTES, max_packages=DEFAULT_MAX_PACKAGES,
             inline=False, clock=None):
        """Open (creating) the store of ``data_dir``, re-verify it; fires with the store."""
        d = Database.open(reactor, os.path.join(data_dir, INDEX_FILE), MIGRATIONS, inline=inline)
        return d.addCallback(lambda db: cls.load(db, reactor, data_dir, max_bytes=max_bytes,
                                                 max_packages=max_packages, inline=inline, clock=clock))

    @classmethod
    @defer.inlineCallbacks
    def load(cls, db, reactor, data_dir, *, max_bytes=DEFAULT_MAX_BYTES, max_packages=DEFAULT_MAX_PACKAGES,
             inline=False, clock=None):
        """The store over an opened index ``db`` (as orb.net.service opens it), re-verified."""
        root = os.path.join(data_dir, PACKAGES_DIR)
        io = _Io(reactor, inline)
        store = cls(db, io, root, clock if clock is not None else reactor, max_bytes=max_bytes,
                    max_packages=max_packages)
        yield io.run(os.makedirs, os.path.join(root, PARTIAL_DIR), 0o700, True)
        yield io.run(_owner_only, os.path.join(data_dir, INDEX_FILE))  # it holds sealed secrets (RFC 9.12)
        yield store._recover()
        return store

    def close(self):
        """Stop the file worker (the index is closed by whoever opened it)."""
        self.io.stop()

    @defer.inlineCallbacks
    def _recover(self):
        rows = yield self.db.run(lambda c: c.execute("SELECT fid, size, version, added_at FROM packages").fetchall())
        partial_rows = yield self.db.run(lambda c: c.execute("SELECT fid, size, started_at FROM partials").fetchall())
        names = yield self.io.run(os.listdir, self.root)
        partial_names = yield self.io.run(os.listdir, os.path.join(self.root, PARTIAL_DIR))
        now = int(self.clock.seconds())
        indexed = {}
        for fid, size, version, added_at in rows:
            indexed[bytes(fid)] = Entry(bytes(fid), size, version, added_at)
        for name in names:  # a verified file whose row was never written (a crash between the two)
            raw = _fid_of_name(name)
            if raw is not None and raw not in indexed:
                indexed[raw] = Entry(raw, -1, 1, now)
            elif raw is None and name not in (PARTIAL_DIR,):
                yield self.io.run(_unlink, os.path.join(self.root, name))  # leftovers (*.tmp)
        keep, drop = [], []
        for entry in indexed.values():
            path = self.path_of(entry.fid)
            try:
                digest, _, size = yield self.io.run(_hash_file, path)
            except OSError as e:
                drop.append((entry, f"its file cannot be read ({e.strerror})"))
                continue
            if entry.fid[0] != fidmod.ALGORITHM_SHA256 or bytes([entry.fid[0]]) + digest != entry.fid:
                drop.append((entry, "its bytes do not hash to its fid"))
            elif entry.size not in (-1, size):
                drop.append((entry, f"it has {size} bytes, the index says {entry.size}"))
            else:
                keep.append(attrs.evolve(entry, size=size))
        keep.sort(key=lambda e: e.added_at)
        while len(keep) > self.max_packages or sum(e.size for e in keep) > self.max_bytes:
            drop.append((keep.pop(), "over the store's bounds"))
        for entry, reason in drop:
            log.warn("package store: dropping {fid}: {reason}; it must be fetched again",
                     fid=fidmod.to_text(entry.fid), reason=reason)
            yield self.io.run(_unlink, self.path_of(entry.fid))
            self.dropped.append((entry.fid, reason))
        rowed = {bytes(r[0]) for r in rows}
        adopted = [e for e in keep if e.fid not in rowed]

        def rewrite(c):
            for entry, _ in drop:
                c.execute("DELETE FROM packages WHERE fid = ?", (entry.fid,))
            for entry in adopted:
                c.execute("INSERT OR REPLACE INTO packages (fid, size, version, added_at) VALUES (?, ?, ?, ?)",
                          (entry.fid, entry.size, entry.version, entry.added_at))

        yield self.db.run(rewrite)
        self._entries = {e.fid: e for e in keep}
        owner_rows = yield self.db.run(lambda c: c.execute("SELECT fid, owner_key FROM owners").fetchall())
        orphans = []
        for fid, owner_key in owner_rows:
            if bytes(fid) in self._entries and len(owner_key) == 32:
                self._owners[bytes(fid)] = bytes(owner_key)
            else:
                orphans.append((bytes(fid),))
        if orphans:
            yield self.db.run(lambda c: c.executemany("DELETE FROM owners WHERE fid = ?", orphans))
        secret_rows = yield self.db.run(lambda c: c.execute(
            "SELECT fid, owner_key, seq, sealed, signature FROM secrets").fetchall())
        orphans = []
        for fid, owner_key, seq, sealed, signature in secret_rows:
            if bytes(fid) in self._entries:
                self._sealed[bytes(fid)] = SealedSecret(bytes(owner_key), seq, bytes(sealed), bytes(signature))
            else:
                orphans.append((bytes(fid),))
        if orphans:
            yield self.db.run(lambda c: c.executemany("DELETE FROM secrets WHERE fid = ?", orphans))
        yield self._recover_deprecations()
        # Partial downloads: keep those with a row, a file and some life left.
        known = {}
        for fid, size, started_at in partial_rows:
            known[bytes(fid)] = (size, started_at)
        stale = []
        for fid, (size, started_at) in known.items():
            name = fidmod.to_text(fid)
            if (name not in partial_names or now - started_at > PARTIAL_TTL_S or fid in self._entries
                    or len(self._partials) >= MAX_PARTIALS):
                stale.append(fid)
                continue
            self._partials[fid] = Partial(self, fid, size, started_at)
        for name in partial_names:
            raw = _fid_of_name(name)
            if raw is None or raw not in self._partials:
                yield self.io.run(_unlink, os.path.join(self.root, PARTIAL_DIR, name))
        if stale:
            yield self.db.run(lambda c: c.executemany("DELETE FROM partials WHERE fid = ?", [(f,) for f in stale]))
        for partial in self._partials.values():
            yield partial._reload()
        if self._entries or self._partials:
            log.info("package store: {count} verified packages ({size} bytes), {partials} partial downloads",
                     count=len(self._entries), size=self.stored_bytes, partials=len(self._partials))

    # --- what the store holds ---------------------------------------------------------

    def __len__(self):
        return len(self._entries)

    def __contains__(self, fid):
        return fid in self._entries

    def get(self, fid):
        return self._entries.get(fid)

    def entries(self):
        return list(self._entries.values())

    @property
    def stored_bytes(self):
        return sum(e.size for e in self._entries.values())

    @property
    def used_bytes(self):
        """Verified bytes plus the full size of every partial download."""
        return self.stored_bytes + sum(p.size for p in self._partials.values())

    def owner(self, fid):
        """The owner key the OFFER of held package ``fid`` named, or None."""
        return self._owners.get(fid) if fid in self._entries else None

    @defer.inlineCallbacks
    def _recover_deprecations(self):
        from orb.protocol import names as nm

        rows = yield self.db.run(lambda c: c.execute(
            "SELECT fid, body, received_at FROM deprecations ORDER BY received_at").fetchall())
        bad = []
        for fid, body, received_at in rows:
            try:
                message = m.decode_body(m.MessageType.DEPRECATE, bytes(body))
                nm.check_deprecate(message)
                if message.fid != bytes(fid):
                    raise ValueError("row names another fid")
            except (ProtocolError, nm.StatementError, ValueError):
                bad.append((bytes(fid),))
                continue
            self._deprecations[bytes(fid)] = (message, int(received_at))
        if bad:
            log.warn("package store: skipping {count} unreadable deprecation rows", count=len(bad))
            yield self.db.run(lambda c: c.executemany("DELETE FROM deprecations WHERE fid = ?", bad))

    def deprecation(self, fid):
        """The DEPRECATE of ``fid`` this host keeps (the highest seq it took in), or None."""
        kept = self._deprecations.get(fid)
        return None if kept is None else kept[0]

    def deprecations(self):
        """Every DEPRECATE kept, of held fids and of dropped ones."""
        return [message for message, _ in self._deprecations.values()]

    def set_deprecation(self, message):
        """Keep ``message`` (a checked DEPRECATE) as the deprecation of its fid, in place of any other."""
        fid = message.fid
        now = int(self.clock.seconds())
        self._deprecations.pop(fid, None)
        self._deprecations[fid] = (message, now)
        evicted = []
        while len(self._deprecations) > MAX_DEPRECATIONS:
            victim = next((f for f in self._deprecations if f not in self._entries), None)
            if victim is None or victim == fid:
                victim = next(iter(self._deprecations))
            del self._deprecations[victim]
            evicted.append((victim,))
        body = message.encode_body() if not message.ext else attrs.evolve(message, ext=()).encode_body()

        def write(c):
            c.executemany("DELETE FROM deprecations WHERE fid = ?", evicted)
            c.execute("INSERT OR REPLACE INTO deprecations (fid, body, received_at) VALUES (?, ?, ?)",
                      (fid, body, now))

        return self.db.run(write)

    def set_owner(self, fid, owner_key):
        """Keep ``owner_key`` (32 bytes) as the owner of held package ``fid``; fails with NotHeld."""
        if fid not in self._entries:
            return defer.fail(NotHeld(fid))
        if len(owner_key) != 32:
            return defer.fail(ValueError("an owner key is 32 bytes"))
        if self._owners.get(fid) == owner_key:
            return defer.succeed(None)
        self._owners[fid] = owner_key
        return self.db.run(lambda c: c.execute("INSERT OR REPLACE INTO owners (fid, owner_key) VALUES (?, ?)",
                                               (fid, owner_key)))

    # --- capability token revocations (orb.peer.tokens keeps them in memory) --------------------------

    def revocations(self):
        """Deferred[list of (token_id, issuer, not_after, sig)]: every revocation kept."""
        return self.db.run(lambda c: [(bytes(t), bytes(i), n, bytes(g)) for t, i, n, g in c.execute(
            "SELECT token_id, issuer, not_after, sig FROM revocations").fetchall()])

    def add_revocation(self, token_id, issuer, not_after, sig):
        return self.db.run(lambda c: c.execute(
            "INSERT OR REPLACE INTO revocations (token_id, issuer, not_after, sig) VALUES (?, ?, ?, ?)",
            (token_id, issuer, not_after, sig)))

    def purge_revocations(self, now, keep=None):
        """Forget revocations past their ``not_after``; with ``keep``, all but the ``keep`` latest-expiring."""
        def purge(c):
            c.execute("DELETE FROM revocations WHERE not_after < ?", (int(now),))
            if keep is not None:
                c.execute("DELETE FROM revocations WHERE rowid NOT IN "
                          "(SELECT rowid FROM revocations ORDER BY not_after DESC LIMIT ?)", (keep,))
        return self.db.run(purge)

    def sealed_secret(self, fid):
        """The SealedSecret kept for held package ``fid``, or None."""
        return self._sealed.get(fid) if fid in self._entries else None

    def set_sealed_secret(self, fid, secret):
        """Keep ``secret`` (a SealedSecret the caller checked) for held package ``fid``; fails with NotHeld."""
        if fid not in self._entries:
            return defer.fail(NotHeld(fid))
        self._sealed[fid] = secret
        return self.db.run(lambda c: c.execute(
            "INSERT OR REPLACE INTO secrets (fid, owner_key, seq, sealed, signature) VALUES (?, ?, ?, ?, ?)",
            (fid, secret.owner_key, secret.seq, secret.sealed, secret.signature)))

    def path_of(self, fid):
        return os.path.join(self.root, fidmod.to_text(fid))

    def _partial_path(self, fid):
        return os.path.join(self.root, PARTIAL_DIR, fidmod.to_text(fid))

    def path(self, fid):
        """The file of a verified package (for the executor); NotHeld if there is none."""
        if fid not in self._entries:
            raise NotHeld(fid)
        return self.path_of(fid)

    def partial(self, fid):
        return self._partials.get(fid)

    def room_for(self, size):
        """None if a package of ``size`` bytes fits the bounds now, else why not."""
        if len(self._entries) + len(self._partials) >= self.max_packages:
            return f"the store holds its maximum of {self.max_packages} packages"
        if self.used_bytes + size > self.max_bytes:
            return f"{size} more bytes would pass the store's {self.max_bytes} bytes"
        return None

    # --- reading ----------------------------------------------------------------------

    def read(self, fid, offset, length):
        """``length`` bytes of package ``fid`` from ``offset`` (fewer at its end). Fails with
        NotHeld, or OutOfRange if ``offset`` is at or past the end or ``length`` is not 1..MAX_READ_BYTES."""
        entry = self._entries.get(fid)
        if entry is None:
            return defer.fail(NotHeld(fid))
        if not 1 <= length <= MAX_READ_BYTES:
            return defer.fail(OutOfRange(f"length {length} is not 1..{MAX_READ_BYTES}"))
        if not 0 <= offset < entry.size:
            return defer.fail(OutOfRange(f"offset {offset} is not below the package size {entry.size}"))
        return self.io.run(_read_range, self.path_of(fid), offset, min(length, entry.size - offset))

    def proof(self, fid, nonce):
        """SHA-256(nonce || package), streamed from disk (RFC 9.6). Checks the copy on the way:
        a copy that no longer hashes to its fid is dropped and the Deferred fails with NotHeld."""
        if fid not in self._entries:
            return defer.fail(NotHeld(fid))

        def done(result):
            digest, salted, _ = result
            if bytes([fid[0]]) + digest != fid:
                return self._drop_corrupt(fid, "its bytes no longer hash to its fid")
            return salted

        def unreadable(failure):
            failure.trap(OSError)
            return self._drop_corrupt(fid, f"its file cannot be read ({failure.value.strerror})")

        return self.io.run(_hash_file, self.path_of(fid), nonce).addCallbacks(done, unreadable)

    def manifest(self, fid):
        """The bytes of the stored package's orb-manifest.json."""
        if fid not in self._entries:
            return defer.fail(NotHeld(fid))
        return self.io.run(_manifest_of, self.path_of(fid))

    @defer.inlineCallbacks
    def _drop_corrupt(self, fid, reason):
        log.warn("package store: dropping {fid}: {reason}; it must be fetched again", fid=fidmod.to_text(fid),
                 reason=reason)
        yield self.remove(fid, reason)
        raise NotHeld(fid)

    # --- writing ----------------------------------------------------------------------

    @defer.inlineCallbacks
    def put(self, data, fid=None, version=1):
        """Store a whole package held in memory (small ones: tests, a tracker's own copy).
        Fires with its Entry; VerifyError if it does not hash to ``fid``."""
        actual = fidmod.fid_for(data)
        if fid is not None and actual != fid:
            raise VerifyError(f"the bytes hash to {fidmod.to_text(actual)}, not {fidmod.to_text(fid)}")
        if actual in self._entries:
            return self._entries[actual]
        why = self.room_for(len(data))
        if why is not None:
            raise StoreFull(why)
        yield self.io.run(_write_new, self.path_of(actual), data)
        entry = yield self._index(Entry(actual, len(data), version, int(self.clock.seconds())))
        return entry

    @defer.inlineCallbacks
    def _index(self, entry):
        yield self.db.run(lambda c: c.execute(
            "INSERT OR REPLACE INTO packages (fid, size, version, added_at) VALUES (?, ?, ?, ?)",
            (entry.fid, entry.size, entry.version, entry.added_at)))
        self._entries[entry.fid] = entry
        return entry

    @defer.inlineCallbacks
    def remove(self, fid, reason="removed"):
        """Forget a verified package and delete its file."""
        if self._entries.pop(fid, None) is None:
            return
        self._owners.pop(fid, None)
        self._sealed.pop(fid, None)

        def forget(c):
            c.execute("DELETE FROM packages WHERE fid = ?", (fid,))
            c.execute("DELETE FROM owners WHERE fid = ?", (fid,))
            c.execute("DELETE FROM secrets WHERE fid = ?", (fid,))

        yield self.db.run(forget)
        yield self.io.run(_unlink, self.path_of(fid))
        for listener in list(self.removed_listeners):
            listener(fid, reason)

    def begin(self, fid, size):
        """The Partial download of ``fid`` (``size`` bytes): a new one, or the one held since
        before (a restart, a dropped source) if it was for the same size. Fails with StoreFull."""
        fidmod.check(fid)
        partial = self._partials.get(fid)
        if partial is not None:
            if partial.size == size:
                return defer.succeed(partial)
            return partial.discard().addCallback(lambda _: self.begin(fid, size))
        if fid in self._entries:
            return defer.fail(StoreError("already stored"))
        if len(self._partials) >= MAX_PARTIALS:
            return defer.fail(StoreFull(f"{MAX_PARTIALS} downloads are in progress"))
        why = self.room_for(size)
        if why is not None:
            return defer.fail(StoreFull(why))
        partial = Partial(self, fid, size, int(self.clock.seconds()))
        self._partials[fid] = partial  # reserved at once: two begins cannot both take the last room
        d = self.db.run(lambda c: c.execute("INSERT OR REPLACE INTO partials (fid, size, started_at) VALUES (?, ?, ?)",
                                            (fid, size, partial.started_at)))
        d.addCallback(lambda _: self.io.run(_write_new, partial.path, b""))
        d.addCallback(lambda _: partial)

        def failed(f):
            self._partials.pop(fid, None)
            return f

        return d.addErrback(failed)


def node_store(reactor, data_dir, *, max_bytes=DEFAULT_MAX_BYTES, max_packages=DEFAULT_MAX_PACKAGES):
    """The ``orb.net.service.Store`` that opens (and re-verifies) a daemon's package store before its
    core is built: ``NodeService(..., stores=[node_store(...)])``, then ``states["packages"]``."""
    from orb.net.service import Store

    def load(db, key):
        return PackageStore.load(db, reactor, data_dir, max_bytes=max_bytes, max_packages=max_packages)

    def save(store, db):
        return defer.succeed(None)  # every change is written when it happens

    return Store("packages", INDEX_FILE, MIGRATIONS, load, save)


def _fid_of_name(name):
    try:
        return fidmod.check(fidmod.from_text(name))
    except fidmod.FidError:
        return None


class Partial:
    """A download in progress: bytes appended in order, hashed as they come, kept across restarts."""

    def __init__(self, store, fid, size, started_at):
        self.store = store
        self.fid = fid
        self.size = size
        self.started_at = started_at
        self.held = 0  # bytes appended (and so hashed) so far
        self._hash = hashlib.sha256()
        self.closed = False

    @property
    def path(self):
        return self.store._partial_path(self.fid)

    def _reload(self):
        """After a restart: hash what the file holds again (never past ``size``)."""

        def rehash(path, size):
            h = hashlib.sha256()
            held = 0
            with open(path, "rb") as f:
                while held < size:
                    block = f.read(min(HASH_BLOCK_BYTES, size - held))
                    if not block:
                        break
                    h.update(block)
                    held += len(block)
            if held != os.path.getsize(path):
                os.truncate(path, held)
            return h, held

        def loaded(result):
            self._hash, self.held = result

        return self.store.io.run(rehash, self.path, self.size).addCallback(loaded)

    def append(self, data):
        """Add the next ``len(data)`` bytes (at offset ``held``); fires when they are on disk."""
        if self.closed:
            return defer.fail(StoreError("the download was closed"))
        if self.held + len(data) > self.size:
            return defer.fail(OutOfRange(f"{self.held + len(data)} bytes would pass the size {self.size}"))
        self.held += len(data)  # the worker thread appends in submission order
        h = self._hash

        def write(path):
            with open(path, "ab") as f:
                f.write(data)
            h.update(data)

        return self.store.io.run(write, self.path)

    @defer.inlineCallbacks
    def finish(self, version=1):
        """Verify the whole download against the fid and store it. Fires with its Entry; on a
        mismatch the bytes are discarded and VerifyError is raised."""
        if self.closed:
            raise StoreError("the download was closed")
        yield self.store.io.run(lambda: None)  # every append queued before this one is written
        if self.held != self.size:
            raise VerifyError(f"{self.held} of {self.size} bytes held")
        actual = bytes([self.fid[0]]) + self._hash.digest()
        if self.fid[0] != fidmod.ALGORITHM_SHA256 or actual != self.fid:
            yield self.discard()
            raise VerifyError(f"the {self.size} bytes fetched hash to {fidmod.to_text(actual)}, not the fid")
        store = self.store
        self.closed = True

        def move(src, dst):
            with open(src, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(src, dst)

        yield store.io.run(move, self.path, store.path_of(self.fid))
        store._partials.pop(self.fid, None)
        yield store.db.run(lambda c: c.execute("DELETE FROM partials WHERE fid = ?", (self.fid,)))
        entry = yield store._index(Entry(self.fid, self.size, version, int(store.clock.seconds())))
        return entry

    @defer.inlineCallbacks
    def discard(self):
        """Forget the download and its bytes."""
        self.closed = True
        store = self.store
        if store._partials.get(self.fid) is self:
            del store._partials[self.fid]
        yield store.db.run(lambda c: c.execute("DELETE FROM partials WHERE fid = ?", (self.fid,)))
        yield store.io.run(_unlink, self.path)
