"""Tests for orb._db: transactions, migrations, the worker thread."""

import os
import sqlite3
import threading

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase, TestCase

from orb._db import Database, DatabaseClosed, SchemaTooNew

MIGRATIONS = [
    """
    CREATE TABLE kv (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
    CREATE TABLE note (id INTEGER PRIMARY KEY, k TEXT NOT NULL REFERENCES kv(k));
    """,
    lambda c: c.execute("ALTER TABLE kv ADD COLUMN extra TEXT"),
]


def put(conn, k, v):
    conn.execute("INSERT OR REPLACE INTO kv (k, v) VALUES (?, ?)", (k, v))


def get_all(conn):
    return dict(conn.execute("SELECT k, v FROM kv ORDER BY k").fetchall())


class InlineTests(SynchronousTestCase):
    def open(self, migrations=MIGRATIONS):
        path = os.path.join(self.mktemp() + ".sqlite")
        db = self.successResultOf(Database.open(None, path, migrations, inline=True))
        self.addCleanup(db.close)
        return db, path

    def test_migrations_set_user_version(self):
        """A new file is migrated to the latest schema version."""
        db, path = self.open()
        self.assertEqual(db.schema_version, 2)
        version = self.successResultOf(db.run(lambda c: c.execute("PRAGMA user_version").fetchone()[0]))
        self.assertEqual(version, 2)

    def test_pragmas(self):
        """Every connection runs in WAL mode with foreign keys on and synchronous=NORMAL."""
        db, _ = self.open()
        mode, fk, sync = self.successResultOf(
            db.run(
                lambda c: (
                    c.execute("PRAGMA journal_mode").fetchone()[0],
                    c.execute("PRAGMA foreign_keys").fetchone()[0],
                    c.execute("PRAGMA synchronous").fetchone()[0],
                )
            )
        )
        self.assertEqual((mode, fk, sync), ("wal", 1, 1))  # 1 == NORMAL

    def test_reopen_runs_only_new_migrations(self):
        """Reopening an older file applies only the new migrations and keeps the data."""
        db, path = self.open(MIGRATIONS[:1])
        self.successResultOf(db.run(put, "a", 1))
        self.successResultOf(db.close())
        db2 = self.successResultOf(Database.open(None, path, MIGRATIONS, inline=True))
        self.addCleanup(db2.close)
        self.assertEqual(db2.schema_version, 2)
        # Data survived and the second migration's column exists.
        self.successResultOf(db2.run(lambda c: c.execute("UPDATE kv SET extra = 'x'")))
        self.assertEqual(self.successResultOf(db2.run(get_all)), {"a": 1})

    def test_schema_too_new_is_refused(self):
        """A file written by a newer ORB is refused rather than misread."""
        db, path = self.open()
        self.successResultOf(db.close())
        f = self.failureResultOf(Database.open(None, path, MIGRATIONS[:1], inline=True))
        f.trap(SchemaTooNew)

    def test_failed_function_rolls_back(self):
        """Work that raises leaves nothing half-written."""
        db, _ = self.open()
        self.successResultOf(db.run(put, "a", 1))

        def half(conn):
            put(conn, "b", 2)
            raise RuntimeError("boom")

        self.failureResultOf(db.run(half)).trap(RuntimeError)
        self.assertEqual(self.successResultOf(db.run(get_all)), {"a": 1})

    def test_foreign_keys_enforced(self):
        """Foreign keys are enforced."""
        db, _ = self.open()
        f = self.failureResultOf(db.run(lambda c: c.execute("INSERT INTO note (k) VALUES ('missing')")))
        f.trap(sqlite3.IntegrityError)

    def test_run_after_close_fails(self):
        """Work submitted after close fails with DatabaseClosed; close is idempotent."""
        db, _ = self.open()
        self.successResultOf(db.close())
        self.successResultOf(db.close())  # idempotent
        self.failureResultOf(db.run(get_all)).trap(DatabaseClosed)

    def test_broken_migration_leaves_previous_version(self):
        """A migration that fails leaves the file at the previous version, with no half-made tables."""
        path = self.mktemp() + ".sqlite"

        def broken(conn):
            conn.execute("CREATE TABLE half (x)")
            raise RuntimeError("migration bug")

        self.failureResultOf(Database.open(None, path, [MIGRATIONS[0], broken], inline=True)).trap(RuntimeError)
        db = self.successResultOf(Database.open(None, path, MIGRATIONS[:1], inline=True))
        self.addCleanup(db.close)
        self.assertEqual(db.schema_version, 1)
        tables = self.successResultOf(
            db.run(lambda c: {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")})
        )
        self.assertNotIn("half", tables)

    def test_incomplete_sql_migration_is_an_error(self):
        """An incomplete SQL statement in a migration is an error, not silently dropped."""
        path = self.mktemp() + ".sqlite"
        self.failureResultOf(Database.open(None, path, ["CREATE TABLE t (x"], inline=True)).trap(ValueError)


class ThreadedTests(TestCase):
    """The real thing: a file on disk and the real reactor."""

    @inlineCallbacks
    def test_work_runs_on_one_dedicated_thread(self):
        """SQL runs on one worker thread per file, never the reactor thread."""
        path = self.mktemp() + ".sqlite"
        db = yield Database.open(reactor, path, MIGRATIONS)
        self.addCleanup(db.close)
        main = threading.get_ident()
        idents = yield db.run(lambda c: threading.get_ident())
        idents2 = yield db.run(lambda c: threading.get_ident())
        self.assertNotEqual(idents, main)
        self.assertEqual(idents, idents2)

    @inlineCallbacks
    def test_writes_are_durable_across_reopen(self):
        """Writes queued without waiting all land, in order, and survive a reopen."""
        path = self.mktemp() + ".sqlite"
        db = yield Database.open(reactor, path, MIGRATIONS)
        # Submit many writes without waiting: they are serialized in order.
        ds = [db.run(put, f"k{i}", i) for i in range(50)]
        for d in ds:
            yield d
        yield db.close()
        self.assertTrue(db.closed)
        db2 = yield Database.open(reactor, path, MIGRATIONS)
        self.addCleanup(db2.close)
        rows = yield db2.run(get_all)
        self.assertEqual(len(rows), 50)
        self.assertEqual(rows["k49"], 49)

    @inlineCallbacks
    def test_exception_reaches_caller_and_rolls_back(self):
        """An exception on the worker thread reaches the caller and rolls back."""
        path = self.mktemp() + ".sqlite"
        db = yield Database.open(reactor, path, MIGRATIONS)
        self.addCleanup(db.close)

        def bad(conn):
            put(conn, "x", 1)
            raise KeyError("nope")

        with self.assertRaises(KeyError):
            yield db.run(bad)
        rows = yield db.run(get_all)
        self.assertEqual(rows, {})

    @inlineCallbacks
    def test_open_failure_is_reported_and_thread_stopped(self):
        """A file that cannot be opened fails the open and leaves no thread behind."""
        path = os.path.join(self.mktemp(), "missing-dir", "x.sqlite")
        before = threading.active_count()
        with self.assertRaises(sqlite3.OperationalError):
            yield Database.open(reactor, path, MIGRATIONS)
        self.assertEqual(threading.active_count(), before)
