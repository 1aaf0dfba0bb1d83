"""
The package store (orb.net.packages): only verified packages, bounded,
kept across restarts, re-verified on open; reads and proofs.
"""

import hashlib
import os

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase, TestCase

from orb.net import packages as pk
from orb.protocol import fid as fidmod
from tests._packages import function, open_store


class StoreTests(SynchronousTestCase):
    def setUp(self):
        self.data, self.manifest = function()
        self.fid = fidmod.fid_for(self.data)

    def reopen(self, store, data_dir, **kwargs):
        self.successResultOf(store.db.close())
        return open_store(self, data_dir, **kwargs)[0]

    def test_put_then_read_and_prove(self):
        """A stored package is served by range and proved as SHA-256(nonce || package)."""
        store, _ = open_store(self)
        entry = self.successResultOf(store.put(self.data, self.fid))
        self.assertEqual((entry.fid, entry.size), (self.fid, len(self.data)))
        self.assertEqual(self.successResultOf(store.read(self.fid, 100, 50)), self.data[100:150])
        self.assertEqual(self.successResultOf(store.read(self.fid, len(self.data) - 10, 1000)), self.data[-10:])
        nonce = b"n" * 32
        self.assertEqual(self.successResultOf(store.proof(self.fid, nonce)), hashlib.sha256(nonce + self.data).digest())
        self.assertEqual(self.successResultOf(store.manifest(self.fid)), self.manifest)

    def test_put_refuses_bytes_that_do_not_hash_to_the_fid(self):
        """Bytes that do not hash to the fid they are offered as are refused and nothing is stored."""
        store, data_dir = open_store(self)
        self.failureResultOf(store.put(self.data + b"x", self.fid), pk.VerifyError)
        self.assertEqual(len(store), 0)
        self.assertEqual(os.listdir(os.path.join(data_dir, pk.PACKAGES_DIR)), [pk.PARTIAL_DIR])

    def test_reads_out_of_range_and_unknown_fids_fail_specifically(self):
        """A read past the end or of a bad length is OutOfRange; an unknown fid is NotHeld."""
        store, _ = open_store(self)
        self.successResultOf(store.put(self.data))
        self.failureResultOf(store.read(self.fid, len(self.data), 1), pk.OutOfRange)
        self.failureResultOf(store.read(self.fid, 0, 0), pk.OutOfRange)
        self.failureResultOf(store.read(self.fid, 0, pk.MAX_READ_BYTES + 1), pk.OutOfRange)
        self.failureResultOf(store.read(fidmod.fid_for(b"other"), 0, 1), pk.NotHeld)
        self.failureResultOf(store.proof(fidmod.fid_for(b"other"), b"n" * 32), pk.NotHeld)

    def test_restart_keeps_packages_and_partial_downloads(self):
        """Reopening the store finds every verified package and every partial download with its bytes."""
        store, data_dir = open_store(self)
        self.successResultOf(store.put(self.data))
        big, _ = function(payload_bytes=5000, seed=1)
        big_fid = fidmod.fid_for(big)
        partial = self.successResultOf(store.begin(big_fid, len(big)))
        self.successResultOf(partial.append(big[:3000]))
        store = self.reopen(store, data_dir)
        self.assertIn(self.fid, store)
        self.assertEqual(self.successResultOf(store.read(self.fid, 0, 10)), self.data[:10])
        resumed = self.successResultOf(store.begin(big_fid, len(big)))
        self.assertEqual(resumed.held, 3000)
        self.successResultOf(resumed.append(big[3000:]))
        entry = self.successResultOf(resumed.finish())
        self.assertEqual(entry.size, len(big))
        self.assertEqual(self.successResultOf(store.read(big_fid, 0, 8)), big[:8])

    def test_open_drops_a_corrupted_copy_and_reports_it(self):
        """A stored file whose bytes changed is dropped on open and listed in ``dropped``; the others stay."""
        store, data_dir = open_store(self)
        other, _ = function(payload_bytes=100, seed=2)
        self.successResultOf(store.put(self.data))
        self.successResultOf(store.put(other))
        path = store.path(self.fid)
        with open(path, "r+b") as f:
            f.seek(700)
            f.write(b"X")
        store = self.reopen(store, data_dir)
        self.assertNotIn(self.fid, store)
        self.assertIn(fidmod.fid_for(other), store)
        self.assertEqual([fid for fid, _ in store.dropped], [self.fid])
        self.assertFalse(os.path.exists(path))

    def test_open_drops_a_missing_file(self):
        """An indexed package whose file vanished is dropped on open and reported."""
        store, data_dir = open_store(self)
        self.successResultOf(store.put(self.data))
        os.remove(store.path(self.fid))
        store = self.reopen(store, data_dir)
        self.assertEqual(len(store), 0)
        self.assertEqual([fid for fid, _ in store.dropped], [self.fid])

    def test_proof_of_a_corrupted_copy_drops_it(self):
        """A copy that rotted after open is not proved: the store drops it and tells its listeners."""
        store, _ = open_store(self)
        self.successResultOf(store.put(self.data))
        removed = []
        store.removed_listeners.append(lambda fid, why: removed.append(fid))
        with open(store.path_of(self.fid), "r+b") as f:
            f.write(b"X")
        self.failureResultOf(store.proof(self.fid, b"n" * 32), pk.NotHeld)
        self.assertNotIn(self.fid, store)
        self.assertEqual(removed, [self.fid])

    def test_bounds_on_bytes_and_packages(self):
        """The store refuses a package over its byte or package bound, counting downloads in full."""
        store, _ = open_store(self, max_bytes=len(self.data) + 4096, max_packages=2)
        self.successResultOf(store.put(self.data))
        big, _ = function(payload_bytes=8000, seed=3)
        self.failureResultOf(store.put(big), pk.StoreFull)
        self.failureResultOf(store.begin(fidmod.fid_for(big), len(big)), pk.StoreFull)
        small, _ = function(payload_bytes=10, seed=4)
        self.successResultOf(store.begin(fidmod.fid_for(small), len(small)))
        third, _ = function(payload_bytes=20, seed=5)
        self.failureResultOf(store.put(third), pk.StoreFull)  # 1 package + 1 download = 2

    def test_a_download_that_does_not_verify_is_discarded(self):
        """A partial download whose bytes do not hash to its fid is refused and its bytes deleted."""
        store, _ = open_store(self)
        partial = self.successResultOf(store.begin(self.fid, len(self.data)))
        bad = bytearray(self.data)
        bad[600] ^= 1
        self.successResultOf(partial.append(bytes(bad)))
        self.failureResultOf(partial.finish(), pk.VerifyError)
        self.assertNotIn(self.fid, store)
        self.assertIsNone(store.partial(self.fid))
        self.assertFalse(os.path.exists(partial.path))

    def test_a_download_cannot_grow_past_its_size(self):
        """Appending past the size a download was begun with is refused."""
        store, _ = open_store(self)
        partial = self.successResultOf(store.begin(self.fid, 10))
        self.failureResultOf(partial.append(b"x" * 11), pk.OutOfRange)


class ThreadedStoreTests(TestCase):
    """The store as a daemon runs it: SQLite and file work on worker threads, the real reactor."""

    @defer.inlineCallbacks
    def test_store_works_off_the_reactor_thread_and_reopens(self):
        """With worker threads a download is appended, verified, read, proved, and found again on reopen."""
        from twisted.internet import reactor

        data, _ = function(payload_bytes=300_000, seed=9)
        fid = fidmod.fid_for(data)
        data_dir = self.mktemp()
        os.makedirs(data_dir)
        store = yield pk.PackageStore.open(reactor, data_dir)
        partial = yield store.begin(fid, len(data))
        appends = [partial.append(data[i:i + 65536]) for i in range(0, len(data), 65536)]
        yield defer.gatherResults(appends)
        entry = yield partial.finish()
        self.assertEqual(entry.size, len(data))
        self.assertEqual((yield store.read(fid, 1000, 100)), data[1000:1100])
        self.assertEqual((yield store.proof(fid, b"k" * 32)), hashlib.sha256(b"k" * 32 + data).digest())
        store.close()
        yield store.db.close()
        again = yield pk.PackageStore.open(reactor, data_dir)
        self.addCleanup(again.db.close)
        self.addCleanup(again.close)
        self.assertEqual(again.get(fid).size, len(data))
        self.assertEqual(again.dropped, [])
