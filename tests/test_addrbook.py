"""Tests for orb.net.addrbook: Bitcoin-style new/tried tables."""

import collections
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from orb._db import Database
from orb.net import addrbook
from orb.net.addrbook import (
    BUCKET_SIZE,
    MAX_ENTRIES,
    NEW_BUCKETS_PER_SOURCE_GROUP,
    TRIED_BUCKETS_PER_GROUP,
    AddressBook,
    AddrInfo,
    PeerAddress,
    network_group,
    prefix_group,
)

NOW = 1_700_000_000
KEY = bytes(range(32))
NODE = b"\x01" * 32


def pa(ip, port=7400, ts=NOW - 60, roles=1):
    return PeerAddress(ip=ip, port=port, roles=roles, node_id=NODE, timestamp=ts)


def public_ip(rng):
    """A random address in 1.0.0.0-99.255.255.255 minus private space."""
    while True:
        a = rng.randrange(1, 100)
        if a not in (10,):
            return f"{a}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"


def check_invariants(test, book):
    """The tables agree with the index and no bucket overflows."""
    new = sum(len(b) for b in book._new)
    tried = sum(len(b) for b in book._tried)
    test.assertEqual(new, book.new_count)
    test.assertEqual(tried, book.tried_count)
    test.assertEqual(new + tried, len(book))
    test.assertLessEqual(len(book), MAX_ENTRIES)
    for table in (book._new, book._tried):
        for bucket in table:
            test.assertLessEqual(len(bucket), BUCKET_SIZE)
            for pos in bucket:
                test.assertTrue(0 <= pos < BUCKET_SIZE)


class BookMixin:
    def make(self, **kw):
        self.clock = Clock()
        self.clock.advance(NOW)
        kw.setdefault("key", KEY)
        kw.setdefault("rng", random.Random(7))
        return AddressBook(self.clock, **kw)


class AddTests(BookMixin, SynchronousTestCase):
    def test_add_routable(self):
        """A routable address goes into the new table, its relayed timestamp aged by the penalty."""
        book = self.make()
        self.assertEqual(book.add([pa("8.8.8.8")], "1.2.3.4"), 1)
        self.assertIn(("8.8.8.8", 7400), book)
        self.assertEqual((book.new_count, book.tried_count), (1, 0))
        self.assertEqual(book.select(), pa("8.8.8.8", ts=NOW - 60 - addrbook.PENALTY_S))

    def test_self_announcement_has_no_penalty(self):
        """An address announced by the node itself keeps its timestamp, with no penalty."""
        book = self.make()
        book.add([pa("8.8.8.8")], "8.8.8.8")
        self.assertEqual(book.info("8.8.8.8", 7400).addr.timestamp, NOW - 60)

    def test_duplicate_add_counts_once_and_merges(self):
        """Re-announcing a known address adds nothing new but takes the newer timestamp and the union of roles."""
        book = self.make()
        book.add([pa("8.8.8.8", ts=NOW - 3 * 86400, roles=1)], "8.8.8.8")
        self.assertEqual(book.add([pa("8.8.8.8", ts=NOW - 10, roles=2)], "8.8.8.8"), 0)
        info = book.info("8.8.8.8", 7400)
        self.assertEqual(info.addr.timestamp, NOW - 10)
        self.assertEqual(info.addr.roles, 3)
        self.assertEqual(len(book), 1)

    def test_garbage_is_rejected(self):
        """Unroutable, reserved, malformed or mistyped addresses, or any from a bad source, are not added."""
        book = self.make()
        garbage = [
            pa("0.0.0.0"),
            pa("::"),
            pa("224.0.0.1"),
            pa("ff02::1"),
            pa("255.255.255.255"),
            pa("240.0.0.1"),
            pa("169.254.1.1"),
            pa("192.0.2.1"),
            pa("127.0.0.1"),
            pa("::1"),
            pa("10.1.2.3"),
            pa("not-an-ip"),
            pa("1.2.3.4.5"),
            pa("8.8.8.8", port=0),
            pa("8.8.8.8", port=70000),
            PeerAddress("8.8.4.4", 1, 0, b"short", NOW),
            PeerAddress("8.8.4.4", 1, -1, NODE, NOW),
            PeerAddress("8.8.4.4", True, 0, NODE, NOW),
            "8.8.8.8:7400",
            None,
        ]
        self.assertEqual(book.add(garbage, "1.2.3.4"), 0)
        self.assertEqual(len(book), 0)
        self.assertEqual(book.add([pa("8.8.8.8")], "not an ip"), 0)

    def test_loopback_only_when_allowed(self):
        """With allow_loopback, IPv4 and IPv6 loopback addresses are accepted."""
        book = self.make(allow_loopback=True)
        self.assertEqual(book.add([pa("127.0.0.1"), pa("::1", port=1)], "127.0.0.1"), 2)

    def test_ipv4_mapped_ipv6_is_the_ipv4_address(self):
        """An IPv4-mapped IPv6 address is stored as the plain IPv4 address."""
        book = self.make()
        book.add([pa("::ffff:8.8.8.8")], "1.2.3.4")
        self.assertIn(("8.8.8.8", 7400), book)

    def test_only_first_1000_entries_are_read(self):
        """Of an announcement of 1500 addresses, none past the first 1000 is taken in."""
        book = self.make()
        rng = random.Random(1)
        many = [pa(public_ip(rng), port=1000 + i) for i in range(1500)]
        book.add(many, "1.2.3.4")
        self.assertFalse(any(e in book for e in [a.endpoint for a in many[1000:]]))

    def test_implausible_timestamps_become_five_days_old(self):
        """An address stamped in the future is kept as last seen five days ago."""
        book = self.make()
        book.add([pa("8.8.8.8", ts=NOW + 86400), pa("9.9.9.9", ts=0)], "8.8.8.8")
        self.assertEqual(book.info("8.8.8.8", 7400).addr.timestamp, NOW - 5 * 86400)

    def test_too_old_is_not_added(self):
        """An address last seen more than 30 days ago is not added."""
        book = self.make()
        self.assertEqual(book.add([pa("8.8.8.8", ts=NOW - 31 * 86400)], "8.8.8.8"), 0)


class GroupTests(SynchronousTestCase):
    def test_network_group(self):
        """Addresses group by IPv4 /16 and IPv6 /32, and all loopback addresses share one group."""
        self.assertEqual(network_group("8.8.4.4"), network_group("8.8.200.1"))
        self.assertNotEqual(network_group("8.8.4.4"), network_group("8.9.4.4"))
        self.assertEqual(network_group("2001:4860:1::1"), network_group("2001:4860:ffff::1"))
        self.assertNotEqual(network_group("2001:4860::1"), network_group("2001:4861::1"))
        # Bitcoin lumps all local addresses together...
        self.assertEqual(network_group("127.1.0.1"), network_group("127.2.0.1"))

    def test_prefix_group_splits_loopback(self):
        """prefix_group gives loopback addresses one group per /16, for tests and simulations on one host."""
        # ...which the tests and the eclipse simulation must undo.
        self.assertNotEqual(prefix_group("127.1.0.1"), prefix_group("127.2.0.1"))
        self.assertEqual(prefix_group("127.1.0.1"), prefix_group("127.1.9.9"))


class BoundsTests(BookMixin, SynchronousTestCase):
    def test_one_source_group_reaches_few_new_buckets(self):
        """Addresses gossiped from one /16, whatever their groups, fill at most NEW_BUCKETS_PER_SOURCE_GROUP buckets."""
        book = self.make()
        rng = random.Random(2)
        for i in range(40):
            book.add([pa(public_ip(rng)) for _ in range(1000)], f"66.66.{i}.1")
        used = {info.bucket for info in book._infos.values()}
        self.assertLessEqual(len(used), NEW_BUCKETS_PER_SOURCE_GROUP)
        self.assertLessEqual(book.new_count, NEW_BUCKETS_PER_SOURCE_GROUP * BUCKET_SIZE)
        check_invariants(self, book)

    def test_one_address_group_reaches_few_tried_buckets(self):
        """Good addresses from one /16 occupy at most TRIED_BUCKETS_PER_GROUP tried buckets."""
        book = self.make()
        for i in range(500):
            ip = f"66.66.{i // 250}.{i % 250 + 1}"
            book.add([pa(ip)], ip)
            book.good(ip, 7400)
        used = {info.bucket for info in book._infos.values() if info.in_tried}
        self.assertLessEqual(len(used), TRIED_BUCKETS_PER_GROUP)
        self.assertLessEqual(book.tried_count, TRIED_BUCKETS_PER_GROUP * BUCKET_SIZE)
        check_invariants(self, book)

    def test_eclipse_flood_leaves_honest_addresses(self):
        """A 20,000-address flood from one /16 gets at most 64 slots; honest addresses stay and win over 95% of picks."""
        book = self.make(allow_loopback=True, group_fn=prefix_group)
        for i in range(300):
            honest = f"127.{10 + i % 200}.{i // 200}.1"
            book.add([pa(honest)], honest)
        for i in range(20):
            flood = [pa(f"127.1.{j // 250}.{j % 250 + 1}", port=2000 + i) for j in range(1000)]
            book.add(flood, "127.1.0.1")
        attacker = sum(1 for a in book.addresses() if a.ip.startswith("127.1."))
        honest = len(book) - attacker
        self.assertGreaterEqual(honest, 290)
        # One address group via one source group hashes to ONE new bucket:
        # 20,000 addresses occupy at most 64 slots.
        self.assertLessEqual(attacker, BUCKET_SIZE)
        # Selection picks buckets uniformly, so the attacker gets a sliver.
        picks = [book.select() for _ in range(2000)]
        share = sum(1 for p in picks if p.ip.startswith("127.1.")) / len(picks)
        self.assertLess(share, 0.05)
        self.assertGreater(share, 0.0)


def find_tried_collision(book, rng):
    """Two addresses whose tried slots coincide (birthday search)."""
    seen = {}
    while True:
        ip = public_ip(rng)
        b = book._tried_bucket(ip, 7400)
        slot = (b, book._position(True, b, ip, 7400))
        if slot in seen and seen[slot] != ip:
            return seen[slot], ip
        seen[slot] = ip


class TriedTests(BookMixin, SynchronousTestCase):
    def test_good_moves_to_tried(self):
        """A successful connection moves a known address to the tried table; an unknown address is ignored."""
        book = self.make()
        book.add([pa("8.8.8.8")], "8.8.8.8")
        self.assertTrue(book.good("8.8.8.8", 7400))
        self.assertEqual((book.new_count, book.tried_count), (0, 1))
        self.assertTrue(book.info("8.8.8.8", 7400).in_tried)
        self.assertFalse(book.good("9.9.9.9", 7400))  # unknown

    def test_good_records_node_id(self):
        """A successful connection records the node id the peer proved."""
        book = self.make()
        book.add([pa("8.8.8.8")], "8.8.8.8")
        book.good("8.8.8.8", 7400, node_id=b"\x09" * 32)
        self.assertEqual(book.info("8.8.8.8", 7400).addr.node_id, b"\x09" * 32)

    def collide(self):
        book = self.make()
        old, new = find_tried_collision(book, random.Random(4))
        book.add([pa(old), pa(new)], "1.2.3.4")
        self.assertTrue(book.good(old, 7400))
        self.clock.advance(5 * 3600)  # old's success is no longer recent
        self.assertFalse(book.good(new, 7400))
        self.assertEqual(book.pending_collisions, 1)
        self.assertEqual(book.select_tried_collision().ip, old)
        return book, old, new

    def test_collision_kept_when_occupant_proves_good(self):
        """When a contested tried slot's occupant connects again, it keeps the slot and the newcomer stays new."""
        book, old, new = self.collide()
        book.good(old, 7400)
        book.resolve_collisions()
        self.assertTrue(book.info(old, 7400).in_tried)
        self.assertFalse(book.info(new, 7400).in_tried)
        self.assertEqual(book.pending_collisions, 0)

    def test_collision_evicts_occupant_that_fails_its_test(self):
        """An occupant whose test dial gets no success in 60 s yields its tried slot and goes back to new."""
        book, old, new = self.collide()
        book.attempt(old, 7400)
        book.resolve_collisions()  # test still in flight
        self.assertEqual(book.pending_collisions, 1)
        self.clock.advance(61)
        book.resolve_collisions()
        self.assertTrue(book.info(new, 7400).in_tried)
        self.assertFalse(book.info(old, 7400).in_tried)  # back in new, not lost
        self.assertEqual(book.pending_collisions, 0)
        check_invariants(self, book)

    def test_untested_collision_evicts_after_window(self):
        """A contested tried slot whose occupant is never tested goes to the newcomer once the test window ends."""
        book, old, new = self.collide()
        self.clock.advance(addrbook.TEST_WINDOW_S - 10)
        book.resolve_collisions()
        self.assertFalse(book.info(new, 7400).in_tried)
        self.clock.advance(20)
        book.resolve_collisions()
        self.assertTrue(book.info(new, 7400).in_tried)

    def test_without_test_before_evict_occupant_moves_to_new(self):
        """With test_before_evict off, a newcomer takes its tried slot at once and the occupant leaves tried."""
        book = self.make(test_before_evict=False)
        old, new = find_tried_collision(book, random.Random(4))
        book.add([pa(old), pa(new)], "1.2.3.4")
        book.good(old, 7400)
        self.assertTrue(book.good(new, 7400))
        self.assertFalse(book.info(old, 7400).in_tried)
        check_invariants(self, book)


class TerribleTests(BookMixin, SynchronousTestCase):
    def test_rules(self):
        """Terrible: a future or 30-day-old stamp, 3 failures and no success, 10 with none in a week; not if just tried."""
        now = NOW
        fresh = AddrInfo(addr=pa("8.8.8.8", ts=now - 60), source_ip="1.1.1.1")
        self.assertFalse(fresh.is_terrible(now))
        self.assertTrue(AddrInfo(addr=pa("8.8.8.8", ts=now + 3600), source_ip="1.1.1.1").is_terrible(now))
        self.assertTrue(AddrInfo(addr=pa("8.8.8.8", ts=now - 31 * 86400), source_ip="1.1.1.1").is_terrible(now))
        self.assertTrue(AddrInfo(addr=pa("8.8.8.8", ts=0), source_ip="1.1.1.1").is_terrible(now))
        never = AddrInfo(addr=pa("8.8.8.8"), source_ip="1.1.1.1", attempts=3)
        self.assertTrue(never.is_terrible(now))
        once = AddrInfo(addr=pa("8.8.8.8"), source_ip="1.1.1.1", attempts=9, last_success_s=now - 8 * 86400)
        self.assertFalse(once.is_terrible(now))
        once.attempts = 10
        self.assertTrue(once.is_terrible(now))
        once.last_try_s = now - 30  # just tried: never terrible
        self.assertFalse(once.is_terrible(now))

    def test_failures_count_once_per_good(self):
        """Repeated failed dials while we are offline (no success anywhere between) count as one failure."""
        book = self.make()
        book.add([pa("8.8.8.8")], "8.8.8.8")
        for _ in range(5):
            book.attempt("8.8.8.8", 7400)
            self.clock.advance(120)
        self.assertEqual(book.info("8.8.8.8", 7400).attempts, 1)
        self.assertFalse(book.is_terrible("8.8.8.8", 7400))

    def test_terrible_addresses_are_not_gossiped(self):
        """An address that failed 3 times is left out of GETADDR answers once a minute has passed since its last try."""
        book = self.make()
        book.add([pa("8.8.8.8")], "8.8.8.8")
        for _ in range(3):
            self.clock.advance(120)
            book.good("1.1.1.1", 1)  # successes elsewhere make the failures count
            self.clock.advance(120)
            book.attempt("8.8.8.8", 7400)
        self.assertEqual(book.info("8.8.8.8", 7400).attempts, 3)
        self.assertFalse(book.is_terrible("8.8.8.8", 7400))  # tried in the last minute
        self.clock.advance(61)
        self.assertTrue(book.is_terrible("8.8.8.8", 7400))
        self.assertEqual(book.get_addr(), [])


class SelectTests(BookMixin, SynchronousTestCase):
    def test_empty(self):
        """select gives None from an empty book, and new_only gives None when every address is tried."""
        book = self.make()
        self.assertIsNone(book.select())
        book.add([pa("8.8.8.8")], "8.8.8.8")
        book.good("8.8.8.8", 7400)
        self.assertIsNone(book.select(new_only=True))
        self.assertEqual(book.select().ip, "8.8.8.8")

    def test_bias_against_failing_addresses(self):
        """An address whose dials failed is picked less often than a healthy one, but is still picked."""
        book = self.make()
        book.add([pa("8.8.8.8"), pa("9.9.9.9")], "1.1.1.1")
        for _ in range(4):
            book.good("1.1.1.1", 1)
            self.clock.advance(120)
            book.attempt("9.9.9.9", 7400)
        self.assertEqual(book.info("9.9.9.9", 7400).attempts, 2)  # a failure needs a success between
        self.clock.advance(3600)
        picks = collections.Counter(book.select().ip for _ in range(2000))
        self.assertGreater(picks["8.8.8.8"], picks["9.9.9.9"] * 1.3)
        self.assertGreater(picks["9.9.9.9"], 0)

    def test_skips_discouraged(self):
        """A discouraged address is never selected for dialling."""
        book = self.make()
        book.add([pa("8.8.8.8"), pa("9.9.9.9")], "1.1.1.1")
        book.discourage("9.9.9.9", NOW + 3600)
        self.assertEqual({book.select().ip for _ in range(200)}, {"8.8.8.8"})


class GetAddrTests(BookMixin, SynchronousTestCase):
    def test_23_percent(self):
        """A GETADDR answer holds 23% of the book, rounded up, with no address twice."""
        book = self.make()
        rng = random.Random(5)
        book.add([pa(public_ip(rng)) for _ in range(100)], "1.1.1.1")
        n = len(book)
        out = book.get_addr()
        self.assertEqual(len(out), -(-n * 23 // 100))
        self.assertEqual(len({a.endpoint for a in out}), len(out))

    def test_capped_at_1000(self):
        """A GETADDR answer never exceeds 1000 addresses, whatever max_count asks, and honours a smaller max_count."""
        book = self.make()
        rng = random.Random(6)
        for i in range(8):
            book.add([pa(public_ip(rng)) for _ in range(1000)], f"{i + 1}.1.1.1")
        self.assertGreater(len(book) * 23 // 100, 1000)
        self.assertEqual(len(book.get_addr()), 1000)
        self.assertEqual(len(book.get_addr(max_count=5000)), 1000)
        self.assertEqual(len(book.get_addr(max_count=10)), 10)

    def test_small_book_still_answers(self):
        """A book holding one address still shares it in a GETADDR answer."""
        book = self.make()
        book.add([pa("8.8.8.8")], "8.8.8.8")
        self.assertEqual(len(book.get_addr()), 1)


class DiscourageTests(BookMixin, SynchronousTestCase):
    def test_until(self):
        """A discouraged IP, in plain or IPv4-mapped form, is refused until its ban ends, then accepted again."""
        book = self.make()
        book.discourage("8.8.8.8", NOW + 100)
        self.assertTrue(book.is_discouraged("8.8.8.8"))
        self.assertTrue(book.is_discouraged("::ffff:8.8.8.8"))
        self.assertEqual(book.add([pa("8.8.8.8")], "1.1.1.1"), 0)
        self.clock.advance(100)
        self.assertFalse(book.is_discouraged("8.8.8.8"))
        self.assertEqual(book.add([pa("8.8.8.8")], "1.1.1.1"), 1)

    def test_bounded(self):
        """The discouraged list keeps at most MAX_DISCOURAGED IPs, dropping the one whose ban ends soonest."""
        self.patch(addrbook, "MAX_DISCOURAGED", 5)
        book = self.make()
        for i in range(10):
            book.discourage(f"8.8.8.{i}", NOW + 100 + i)
        self.assertEqual(len(book._discouraged), 5)
        self.assertTrue(book.is_discouraged("8.8.8.9"))
        self.assertFalse(book.is_discouraged("8.8.8.0"))


class PersistenceTests(BookMixin, SynchronousTestCase):
    def open_db(self, path):
        db = self.successResultOf(Database.open(None, path, addrbook.MIGRATIONS, inline=True))
        self.addCleanup(db.close)
        return db

    def test_round_trip(self):
        """Dumped to SQLite and loaded, the book has the same key, tables, entries and discouraged IPs."""
        book = self.make(key=None)
        rng = random.Random(8)
        book.add([pa(public_ip(rng)) for _ in range(300)], "1.1.1.1")
        tried = [a for a in book.addresses()[:20]]
        for a in tried:
            book.good(a.ip, a.port)
        book.attempt(book.addresses()[-1].ip, 7400)
        book.discourage("7.7.7.7", NOW + 500)
        path = self.mktemp() + ".sqlite"
        db = self.open_db(path)
        self.successResultOf(book.dump(db))
        self.successResultOf(db.close())

        loaded = self.successResultOf(AddressBook.load(self.open_db(path), self.clock, rng=random.Random(1)))
        self.assertEqual(loaded.key, book.key)
        self.assertEqual(len(loaded), len(book))
        self.assertEqual((loaded.new_count, loaded.tried_count), (book.new_count, book.tried_count))
        for a in book.addresses():
            self.assertEqual(loaded.info(a.ip, a.port), book.info(a.ip, a.port))
        self.assertTrue(loaded.is_discouraged("7.7.7.7"))
        check_invariants(self, loaded)

    def test_dump_replaces_previous(self):
        """A second dump replaces the first: an address removed in between does not come back on load."""
        book = self.make()
        book.add([pa("8.8.8.8"), pa("9.9.9.9")], "1.1.1.1")
        db = self.open_db(self.mktemp() + ".sqlite")
        self.successResultOf(book.dump(db))
        book.remove("9.9.9.9", 7400)
        self.successResultOf(book.dump(db))
        loaded = self.successResultOf(AddressBook.load(db, self.clock))
        self.assertEqual([a.ip for a in loaded.addresses()], ["8.8.8.8"])

    def test_corrupt_rows_are_skipped(self):
        """A corrupt row in the saved book is skipped on load and the good rows still load."""
        book = self.make()
        book.add([pa("8.8.8.8")], "1.1.1.1")
        db = self.open_db(self.mktemp() + ".sqlite")
        self.successResultOf(book.dump(db))
        self.successResultOf(
            db.run(
                lambda c: c.execute(
                    "INSERT INTO addrbook_entry VALUES ('junk', 1, 0, x'00', 1, '1.1.1.1', 'new', 0, 0, 0, 0, 0, 0)"
                )
            )
        )
        loaded = self.successResultOf(AddressBook.load(db, self.clock))
        self.assertEqual([a.ip for a in loaded.addresses()], ["8.8.8.8"])

    def test_empty_database_gives_fresh_key(self):
        """Loading from an empty database gives an empty book with a new 32-byte key."""
        self.make()
        db = self.open_db(self.mktemp() + ".sqlite")
        loaded = self.successResultOf(AddressBook.load(db, self.clock))
        self.assertEqual(len(loaded.key), 32)
        self.assertEqual(len(loaded), 0)


ips = st.one_of(
    st.ip_addresses().map(str),
    st.text(max_size=20),
    st.sampled_from(["127.0.0.1", "8.8.8.8", "66.66.1.1", "0.0.0.0", "255.255.255.255"]),
)
addresses = st.builds(
    PeerAddress,
    ip=st.one_of(ips, st.none(), st.binary(max_size=4), st.lists(st.integers(), max_size=2)),
    port=st.integers(-1, 70000),
    roles=st.integers(-1, 2**33),
    node_id=st.one_of(st.just(NODE), st.binary(max_size=40)),
    timestamp=st.integers(-10, NOW + 10**6),
)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.lists(addresses, max_size=30), ips),
        st.tuples(st.just("good"), st.integers(0, 50)),
        st.tuples(st.just("attempt"), st.integers(0, 50)),
        st.tuples(st.just("select"), st.booleans()),
        st.tuples(st.just("advance"), st.integers(0, 10**6)),
        st.tuples(st.just("resolve")),
    ),
    max_size=40,
)


class PropertyTests(SynchronousTestCase):
    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(ops)
    def test_never_crashes_never_overflows(self, operations):
        """Any mix of adds of any input, dials, selects and passing time keeps the tables consistent and bounded."""
        clock = Clock()
        clock.advance(NOW)
        book = AddressBook(clock, key=KEY, rng=random.Random(0), allow_loopback=True)
        for op in operations:
            known = book.addresses()
            if op[0] == "add":
                book.add(op[1], op[2])
            elif op[0] in ("good", "attempt") and known:
                a = known[op[1] % len(known)]
                getattr(book, op[0])(a.ip, a.port)
            elif op[0] == "select":
                picked = book.select(new_only=op[1])
                if picked is not None:
                    self.assertIn(picked.endpoint, book)
            elif op[0] == "advance":
                clock.advance(op[1])
            elif op[0] == "resolve":
                book.select_tried_collision()
                book.resolve_collisions()
            check_invariants(self, book)
        for a in book.get_addr():
            self.assertIn(a.endpoint, book)
