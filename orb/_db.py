# -*- test-case-name: tests.test_db -*-
"""
SQLite behind Deferreds, off the reactor thread.

Every database file gets exactly one worker thread, which owns the
``sqlite3.Connection``: SQLite connections are not safe to share, and one
writer per file is what WAL wants anyway.  All work is submitted as a
function ``fn(conn, *args)`` which runs inside one transaction
(``BEGIN IMMEDIATE`` ... ``COMMIT``, or ``ROLLBACK`` if it raises) and whose
return value fires the Deferred on the reactor thread.

Schema versions live in ``PRAGMA user_version``.  ``migrations`` is an
ordered list; entry ``i`` brings the schema from version ``i`` to ``i + 1``
and is either a callable taking the connection or a string of SQL
statements.  Each migration runs in its own transaction together with the
``user_version`` bump, so a crash mid-upgrade leaves a consistent version.
Migrations are append-only: never edit one that has shipped.

Components with separate schemas (address book, registry) should use
separate files: ``user_version`` is one number per file.

For unit tests, ``Database.open(None, path, migrations, inline=True)`` runs
everything inline on the calling thread and returns already-fired
Deferreds, so ``SynchronousTestCase.successResultOf`` works.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

log = Logger()

Migration = Callable[[sqlite3.Connection], None] | str

BUSY_TIMEOUT_S = 10.0


class DatabaseError(Exception):
    """Base for the errors this module raises itself."""


class DatabaseClosed(DatabaseError):
    """Work was submitted after ``close()``."""


class SchemaTooNew(DatabaseError):
    """The file was written by a newer ORB than this one knows."""


def _split_sql(script: str) -> list[str]:
    """Split a script into complete statements (``executescript`` would
    COMMIT behind our back, so we do not use it)."""
    statements: list[str] = []
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            if pending.strip().rstrip(";").strip():
                statements.append(pending)
            pending = ""
    if pending.strip():
        raise ValueError(f"incomplete SQL statement in migration: {pending.strip()[:64]!r}")
    return statements


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(
        path,
        timeout=BUSY_TIMEOUT_S,
        isolation_level=None,  # we issue BEGIN/COMMIT ourselves
        check_same_thread=True,
    )
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if mode.lower() != "wal" and path != ":memory:":
        log.warn("database {path} refused WAL mode (got {mode})", path=path, mode=mode)
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def _transaction(conn: sqlite3.Connection, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn, *args, **kw)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


def _migrate(conn: sqlite3.Connection, migrations: Sequence[Migration]) -> int:
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    if current > len(migrations):
        raise SchemaTooNew(
            f"database schema version {current} is newer than this code knows ({len(migrations)})"
        )
    for version in range(current, len(migrations)):
        step = migrations[version]

        def apply(c: sqlite3.Connection, step: Migration = step, version: int = version) -> None:
            if isinstance(step, str):
                for statement in _split_sql(step):
                    c.execute(statement)
            else:
                step(c)
            # PRAGMA takes no parameters; version is our own int.
            c.execute(f"PRAGMA user_version={int(version) + 1}")

        _transaction(conn, apply)
    return len(migrations)


@attrs.define(eq=False)
class Database:
    """A SQLite file with one worker thread.  Build it with ``open``."""

    path: str
    schema_version: int
    _conn: sqlite3.Connection | None = attrs.field(alias="conn")
    _reactor: Any = attrs.field(alias="reactor")
    _pool: ThreadPool | None = attrs.field(alias="pool")
    _shutdown_trigger: Any = attrs.field(default=None, alias="shutdown_trigger")
    _closed: bool = attrs.field(default=False, init=False)

    @classmethod
    def open(
        cls,
        reactor: Any,
        path: str,
        migrations: Sequence[Migration],
        inline: bool = False,
    ) -> Deferred[Database]:
        """Open (creating if needed) and migrate ``path``.

        With ``inline=True`` no thread is used and ``reactor`` may be None.
        """
        if inline:
            try:
                conn = _connect(path)
                try:
                    version = _migrate(conn, migrations)
                except BaseException:
                    conn.close()
                    raise
            except Exception:
                return fail()
            return succeed(cls(path=path, schema_version=version, conn=conn, reactor=None, pool=None))

        pool = ThreadPool(minthreads=1, maxthreads=1, name=f"orb-db:{path}")
        pool.start()
        holder: dict[str, sqlite3.Connection] = {}

        def setup() -> int:
            conn = _connect(path)
            holder["conn"] = conn
            return _migrate(conn, migrations)

        def opened(version: int) -> Database:
            db = cls(path=path, schema_version=version, conn=holder["conn"], reactor=reactor, pool=pool)
            db._shutdown_trigger = reactor.addSystemEventTrigger("during", "shutdown", db.close)
            log.debug("opened database {path} at schema {version}", path=path, version=version)
            return db

        def failed(f: Any) -> Any:
            conn = holder.pop("conn", None)

            def cleanup() -> None:
                if conn is not None:
                    conn.close()

            d = deferToThreadPool(reactor, pool, cleanup)
            d.addBoth(lambda _: pool.stop())
            d.addCallback(lambda _: f)
            return d

        d = deferToThreadPool(reactor, pool, setup)
        d.addCallbacks(opened, failed)
        return d

    def run(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Deferred[Any]:
        """Run ``fn(conn, *args, **kw)`` in one transaction on the worker
        thread; the Deferred fires with its result or its exception."""
        if self._closed or self._conn is None:
            return fail(DatabaseClosed(f"database {self.path} is closed"))
        conn = self._conn
        if self._pool is None:
            try:
                return succeed(_transaction(conn, fn, *args, **kw))
            except Exception:
                return fail()
        return deferToThreadPool(self._reactor, self._pool, _transaction, conn, fn, *args, **kw)

    def close(self) -> Deferred[None]:
        """Finish queued work, checkpoint and close.  Idempotent."""
        if self._closed:
            return succeed(None)
        self._closed = True
        conn, self._conn = self._conn, None

        def shut(c: sqlite3.Connection) -> None:
            try:
                c.execute("PRAGMA optimize")
            finally:
                c.close()

        if self._pool is None:
            if conn is not None:
                shut(conn)
            return succeed(None)
        pool = self._pool
        if self._shutdown_trigger is not None:
            try:
                self._reactor.removeSystemEventTrigger(self._shutdown_trigger)
            except (ValueError, KeyError):
                pass  # we are being called by that very trigger
            self._shutdown_trigger = None
        d = deferToThreadPool(self._reactor, pool, shut, conn)

        def stop(result: Any) -> Any:
            # The queue is empty (close() was the last job), so joining the
            # single worker returns at once.
            pool.stop()
            return result

        d.addBoth(stop)
        d.addCallback(lambda _: None)
        return d

    @property
    def closed(self) -> bool:
        return self._closed
