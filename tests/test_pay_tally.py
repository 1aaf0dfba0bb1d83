"""A signer's tally (orb.pay.tally): counts per (fid, host), durable before signing, vouchers a host's book accepts."""

import os
import stat
import threading
import time

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from orb.pay import voucher as V
from orb.pay.book import VoucherBook
from orb.pay.tally import Tally, TallyFull
from orb.protocol import fid as fidmod

KEY = bytes.fromhex("44" * 32)
HOST = V.address_of(bytes.fromhex("55" * 32))
OTHER_HOST = V.address_of(bytes.fromhex("66" * 32))
DOMAIN = V.Domain(chain_id=31337, contract="0x" + "ab" * 20)
FID32 = V.fid_bytes32(fidmod.fid_for(b"tally"))


class TallyTests(SynchronousTestCase):
    def setUp(self):
        self.path = os.path.join(self.mktemp(), "tally.sqlite")
        self.clock = Clock()
        self.clock.advance(1_000)

    def tally(self, **kw):
        t = Tally(self.path, KEY, DOMAIN, clock=self.clock, **kw)
        self.addCleanup(lambda: t._conn.close())
        return t

    def test_counts_and_signs(self):
        """Calls, bytes and epochs add up per (fid, host); the voucher carries them, signed by the tally's key."""
        t = self.tally(expiry_s=600)
        for _ in range(3):
            t.record_call(FID32, HOST, nbytes=100)
        t.record_epoch(FID32, HOST)
        t.record_call(FID32, OTHER_HOST)
        signed = t.sign(FID32, HOST)
        self.assertEqual(signed.voucher.counters(), (3, 300, 1))
        self.assertEqual((signed.voucher.signer, signed.voucher.expiry), (V.address_of(KEY), 1_600))
        signed.verify(now=1_000)
        self.assertEqual(t.counters(FID32, OTHER_HOST), (1, 0, 0))
        self.assertIsNone(t.sign(FID32, V.address_of(bytes.fromhex("77" * 32))))
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)

    def test_signed_counters_survive_a_crash(self):
        """After a crash (no close), the tally resumes at least at the last voucher it signed, never below."""
        t = self.tally()
        for _ in range(10):
            t.record_call(FID32, HOST)
        signed = t.sign(FID32, HOST)
        for _ in range(5):  # counted, never flushed: lost in the crash
            t.record_call(FID32, HOST)
        t2 = self.tally()
        self.assertEqual(t2.counters(FID32, HOST), (10, 0, 0))
        t2.record_call(FID32, HOST)
        again = t2.sign(FID32, HOST)
        self.assertGreater(again.voucher.requests, signed.voucher.requests)

    def test_host_book_accepts_successive_vouchers(self):
        """Each fresh voucher of the tally supersedes the last one in the host's book."""
        t = self.tally()
        book = VoucherBook(os.path.join(self.mktemp(), "book.sqlite"), clock=self.clock)
        self.addCleanup(book.close)
        for n in (1, 5, 9):
            while t.counters(FID32, HOST)[0] < n:
                t.record_call(FID32, HOST)
            self.assertTrue(book.add(t.sign(FID32, HOST), host=HOST))
        self.assertEqual(book.latest()[0].signed.voucher.requests, 9)

    def test_counting_never_waits_for_a_write(self):
        """While a flush is stuck on a slow disk, a call is still counted at once: the reactor never waits on SQLite."""
        t = self.tally()
        t.record_call(FID32, HOST)
        real, entered, release = t._conn, threading.Event(), threading.Event()

        class SlowDisk:
            def execute(self, *args):
                entered.set()
                release.wait(10)
                return real.execute(*args)

        t._conn = SlowDisk()
        writer = threading.Thread(target=t.flush)
        writer.start()
        try:
            self.assertTrue(entered.wait(5))
            started = time.monotonic()
            t.record_call(FID32, HOST)
            counted = t.counters(FID32, HOST)
            waited = time.monotonic() - started
        finally:
            release.set()
            writer.join(10)
            t._conn = real
        self.assertLess(waited, 1.0)
        self.assertEqual(counted[0], 2)
        signed = t.sign(FID32, HOST)  # the second call is written before it is signed
        self.assertEqual(signed.voucher.requests, 2)
        reopened = Tally(self.path, KEY, DOMAIN, clock=self.clock)
        self.addCleanup(reopened._conn.close)
        self.assertEqual(reopened.counters(FID32, HOST)[0], 2)

    def test_bounded(self):
        """The tally refuses a new (fid, host) pair past max_rows; existing pairs still count."""
        t = self.tally(max_rows=1)
        t.record_call(FID32, HOST)
        self.assertRaises(TallyFull, t.record_call, FID32, OTHER_HOST)
        t.record_call(FID32, HOST)
        self.assertEqual(t.counters(FID32, HOST), (2, 0, 0))

    def test_other_domain_apart(self):
        """Counters of one escrow are not read back for another."""
        t = self.tally()
        t.record_call(FID32, HOST)
        t.flush()
        other = Tally(self.path, KEY, V.Domain(chain_id=1, contract=DOMAIN.contract), clock=self.clock)
        self.addCleanup(lambda: other._conn.close())
        self.assertEqual(other.counters(FID32, HOST), (0, 0, 0))
