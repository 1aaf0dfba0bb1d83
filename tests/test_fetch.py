"""
Package transfer between real cores over in-memory transports
(tests/_memnet.py): serving FETCH and CHALLENGE, and the Fetcher's
pipelining, resumption, fallback and handling of bad sources.
"""

import hashlib

from twisted.trial.unittest import SynchronousTestCase

from orb.net.adapter import RemoteError
from orb.net.fetch import Fetcher, FetchFailed
from orb.net.serving import PackageServer
from orb.protocol import fid as fidmod
from orb.protocol import messages as m
from orb.protocol.codes import ErrorCode
from orb.protocol.messages import MessageType
from tests._memnet import PORT, MemoryNet
from tests._packages import function, open_store

CHUNK = 1024


class Counting:
    """Wraps a FETCH handler: counts what it serves, and can hold answers back or cut the session."""

    def __init__(self, handler, net=None, host=None, cut_after=None, hold=False):
        self.handler = handler
        self.net = net
        self.host = host
        self.cut_after = cut_after
        self.hold = hold
        self.served = []  # offsets
        self.held = []

    def __call__(self, record, message, request_id):
        if self.hold:
            self.held.append((record, message, request_id))
            return
        if self.cut_after is not None and len(self.served) >= self.cut_after:
            record.protocol.transport.loseConnection()
            return
        self.served.append(message.offset)
        self.handler(record, message, request_id)

    def release(self, n=1):
        for _ in range(n):
            record, message, request_id = self.held.pop(0)
            self.served.append(message.offset)
            self.handler(record, message, request_id)


class TransferTests(SynchronousTestCase):
    def setUp(self):
        self.net = MemoryNet()
        self.tracker = self.net.tracker("10.1.0.1")
        self.data, self.manifest = function(payload_bytes=9000, seed=7)  # 11 chunks of 1 KiB
        self.fid = fidmod.fid_for(self.data)
        self.chunks = -(-len(self.data) // CHUNK)
        self.tracker_store, _ = open_store(self)
        self.successResultOf(self.tracker_store.put(self.data))
        self.tracker.table.handlers.update(PackageServer(self.tracker_store).handlers())
        self.store, _ = open_store(self)
        self.peer = self.net.peer("10.2.0.1", trackers=[("10.1.0.1", PORT)], packages=self.store,
                                  outbound_peers=0)
        self.net.run(2)

    def source_peer(self, host, holds=True):
        store, _ = open_store(self)
        if holds:
            self.successResultOf(store.put(self.data))
        peer = self.net.peer(host, trackers=[("10.1.0.1", PORT)], packages=store, outbound_peers=0)
        self.net.run(1)
        return peer

    def source(self, core):
        return m.Source(core.node_id, core.local.advertise[0], PORT)

    def fetcher(self, **kwargs):
        kwargs.setdefault("chunk_bytes", CHUNK)
        kwargs.setdefault("window", 3)
        kwargs.setdefault("request_timeout_s", 5.0)
        return Fetcher(self.net.clock, self.peer.table, self.store, **kwargs)

    def to_tracker(self):
        return self.peer.table.get(self.tracker.node_id)

    def ask(self, message):
        d = self.to_tracker().request(message)
        self.net.flush()
        return d

    # --- serving --------------------------------------------------------------------

    def test_fetch_of_an_unknown_fid_is_not_found(self):
        """FETCH for a fid the node does not hold is answered ERROR(not_found), and the session goes on."""
        other = fidmod.fid_for(b"not a package")
        failure = self.failureResultOf(self.ask(m.Fetch(fid=other, offset=0, length=100)), RemoteError)
        self.assertEqual(failure.value.code, ErrorCode.NOT_FOUND)
        self.assertIn(fidmod.to_text(other), failure.value.text)
        answer = self.successResultOf(self.ask(m.Fetch(fid=self.fid, offset=0, length=100)))
        self.assertEqual(answer.data, self.data[:100])

    def test_fetch_out_of_range_is_refused_with_out_of_range(self):
        """FETCH at or past the end, of length 0 or over 1 MiB, is ERROR(out_of_range) naming the bounds."""
        for offset, length in ((len(self.data), 1), (2**40, 10), (0, 0), (0, 1024 * 1024 + 1)):
            failure = self.failureResultOf(self.ask(m.Fetch(fid=self.fid, offset=offset, length=length)),
                                           RemoteError)
            self.assertEqual(failure.value.code, ErrorCode.OUT_OF_RANGE)
            self.assertIn(f"offset < {len(self.data)}", failure.value.text)
        self.assertTrue(self.to_tracker().ready)
        answer = self.successResultOf(self.ask(m.Fetch(fid=self.fid, offset=len(self.data) - 5, length=100)))
        self.assertEqual((answer.data, answer.total_size), (self.data[-5:], len(self.data)))

    def test_bad_fetches_do_not_affect_another_client(self):
        """One client's refused FETCHes leave another client's fetch of the same package intact."""
        other = self.source_peer("10.3.0.1", holds=False)
        for _ in range(10):
            self.failureResultOf(self.ask(m.Fetch(fid=self.fid, offset=len(self.data) + 1, length=1)), RemoteError)
        d = Fetcher(self.net.clock, other.table, other.packages, chunk_bytes=CHUNK).fetch(
            self.fid, len(self.data), [self.source(self.tracker)])
        self.net.flush()
        self.assertEqual(self.successResultOf(d).size, len(self.data))

    def test_challenge_is_proved_or_not_found(self):
        """CHALLENGE of a held fid gets SHA-256(nonce || package); of another fid, ERROR(not_found)."""
        nonce = bytes(range(32))
        proof = self.successResultOf(self.ask(m.Challenge(fid=self.fid, nonce=nonce)))
        self.assertEqual(proof.digest, hashlib.sha256(nonce + self.data).digest())
        other = fidmod.fid_for(b"never deployed")
        failure = self.failureResultOf(self.ask(m.Challenge(fid=other, nonce=nonce)), RemoteError)
        self.assertEqual(failure.value.code, ErrorCode.NOT_FOUND)

    # --- fetching -------------------------------------------------------------------

    def test_fetch_from_the_tracker_session(self):
        """A package fetched over the session we hold with the tracker is stored, verified, byte for byte."""
        d = self.fetcher().fetch(self.fid, len(self.data), [self.to_tracker()])
        self.net.flush()
        self.assertEqual(self.successResultOf(d).fid, self.fid)
        self.assertEqual(self.successResultOf(self.store.read(self.fid, 0, len(self.data))), self.data)

    def test_pipelining_keeps_the_window_full_and_no_more(self):
        """The fetcher keeps exactly ``window`` FETCHes outstanding until the last chunks."""
        counting = Counting(self.tracker.table.handlers[MessageType.FETCH], hold=True)
        self.tracker.table.handlers[MessageType.FETCH] = counting
        d = self.fetcher(window=3).fetch(self.fid, len(self.data), [self.to_tracker()])
        self.net.flush()
        self.assertEqual(len(counting.held), 3)
        peak = 0
        while counting.held:
            counting.release()
            self.net.flush()
            peak = max(peak, len(counting.held))
        self.assertEqual(peak, 3)
        self.assertEqual(sorted(counting.served), [i * CHUNK for i in range(self.chunks)])
        self.assertEqual(self.successResultOf(d).size, len(self.data))

    def test_a_fetch_rate_paces_the_download(self):
        """With --fetch-rate 4096 a 12.5 KiB package (4 chunks) takes 3 s and more, never faster than the rate allows."""
        counting = Counting(self.tracker.table.handlers[MessageType.FETCH])
        self.tracker.table.handlers[MessageType.FETCH] = counting
        fetcher = Fetcher(self.net.clock, self.peer.table, self.store, chunk_bytes=CHUNK * 1024, window=3,
                          rate_bytes_per_s=4096)
        self.assertEqual(fetcher.chunk_bytes, 4096)  # a quarter second's worth, at least 4 KiB
        start = self.net.clock.seconds()
        d = fetcher.fetch(self.fid, len(self.data), [self.to_tracker()])
        self.net.flush()
        self.assertEqual(counting.served, [0])  # the first chunk at once, the rest when the rate allows
        self.net.run(1.9, step_s=0.05)
        self.assertEqual(counting.served, [0, 4096])
        self.assertNoResult(d)
        self.net.run(0.3, step_s=0.05)
        self.assertEqual(counting.served, [0, 4096, 8192])
        self.assertNoResult(d)
        self.net.run(1.0, step_s=0.05)
        self.assertEqual(counting.served, [0, 4096, 8192, 12288])
        self.net.flush()
        self.assertEqual(self.successResultOf(d).size, len(self.data))
        self.assertGreaterEqual(self.net.clock.seconds() - start, 3.0)

    def test_a_dropped_source_is_resumed_from_the_next(self):
        """When a source drops mid-transfer the next source serves only the chunks still missing."""
        first, second = self.source_peer("10.3.0.1"), self.source_peer("10.4.0.1")
        cutting = Counting(first.table.handlers[MessageType.FETCH], cut_after=4)
        first.table.handlers[MessageType.FETCH] = cutting
        counting = Counting(second.table.handlers[MessageType.FETCH])
        second.table.handlers[MessageType.FETCH] = counting
        d = self.fetcher(window=1).fetch(self.fid, len(self.data), [self.source(first), self.source(second)])
        self.net.run(1)
        self.assertEqual(self.successResultOf(d).size, len(self.data))
        self.assertEqual(len(cutting.served), 4)
        self.assertEqual(sorted(counting.served), [i * CHUNK for i in range(4, self.chunks)])

    def test_a_restart_resumes_from_what_is_held(self):
        """Bytes held from before (a restart) are not fetched again."""
        partial = self.successResultOf(self.store.begin(self.fid, len(self.data)))
        self.successResultOf(partial.append(self.data[:5 * CHUNK]))
        counting = Counting(self.tracker.table.handlers[MessageType.FETCH])
        self.tracker.table.handlers[MessageType.FETCH] = counting
        d = self.fetcher().fetch(self.fid, len(self.data), [self.to_tracker()])
        self.net.flush()
        self.assertEqual(self.successResultOf(d).size, len(self.data))
        self.assertEqual(min(counting.served), 5 * CHUNK)

    def test_a_source_sending_bad_bytes_is_discouraged_and_the_copy_refetched(self):
        """Bytes that do not hash to the fid: the copy is discarded, the source banned, another source used."""
        bad, good = self.source_peer("10.3.0.1"), self.source_peer("10.4.0.1")

        def corrupt(record, message, request_id):
            data = bytes(b ^ 0xFF for b in self.data[message.offset:message.offset + message.length])
            record.send(m.Package(fid=message.fid, offset=message.offset, total_size=len(self.data), data=data),
                        response_to=request_id)

        bad.table.handlers[MessageType.FETCH] = corrupt
        counting = Counting(good.table.handlers[MessageType.FETCH])
        good.table.handlers[MessageType.FETCH] = counting
        fetcher = self.fetcher()
        d = fetcher.fetch(self.fid, len(self.data), [self.source(bad), self.source(good)])
        self.net.run(1)
        self.assertEqual(self.successResultOf(d).size, len(self.data))
        self.assertEqual(self.successResultOf(self.store.read(self.fid, 0, 64)), self.data[:64])
        self.assertEqual(len(counting.served), self.chunks)  # the bad copy was discarded, not resumed
        self.assertTrue(self.peer.table.is_banned(bad.node_id))
        self.assertTrue(fetcher.is_bad(bad.node_id))
        self.assertFalse(self.peer.table.is_banned(good.node_id))

    def test_a_source_lying_about_the_size_is_abandoned(self):
        """A PACKAGE whose total_size is not the size offered ends that source; nothing of it is kept."""
        liar = self.source_peer("10.3.0.1")

        def lie(record, message, request_id):
            record.send(m.Package(fid=message.fid, offset=message.offset, total_size=len(self.data) + 1,
                                  data=b"x" * message.length), response_to=request_id)

        liar.table.handlers[MessageType.FETCH] = lie
        d = self.fetcher().fetch(self.fid, len(self.data), [self.source(liar), self.to_tracker()])
        self.net.run(1)
        self.assertEqual(self.successResultOf(d).size, len(self.data))

    def test_a_silent_source_times_out(self):
        """A source that never answers is given up after the request timeout, and the next one serves."""
        silent = self.source_peer("10.3.0.1")
        silent.table.handlers[MessageType.FETCH] = lambda record, message, request_id: None
        d = self.fetcher(request_timeout_s=5.0).fetch(self.fid, len(self.data),
                                                     [self.source(silent), self.to_tracker()])
        self.net.run(4)
        self.assertNoResult(d)
        self.net.run(2)
        self.assertEqual(self.successResultOf(d).size, len(self.data))

    def test_no_source_holds_it(self):
        """With no source holding the package the fetch fails, naming each source's answer; nothing is stored."""
        empty = self.source_peer("10.3.0.1", holds=False)
        d = self.fetcher().fetch(self.fid, len(self.data), [self.source(empty)])
        self.net.run(1)
        failure = self.failureResultOf(d, FetchFailed)
        self.assertIn("not_found", str(failure.value))
        self.assertNotIn(self.fid, self.store)

    def test_size_over_the_limit_is_refused_before_any_fetch(self):
        """A package announced bigger than the limit is not fetched at all."""
        counting = Counting(self.tracker.table.handlers[MessageType.FETCH])
        self.tracker.table.handlers[MessageType.FETCH] = counting
        d = self.fetcher(max_package_bytes=1000).fetch(self.fid, len(self.data), [self.to_tracker()])
        self.net.flush()
        self.failureResultOf(d, FetchFailed)
        self.assertEqual(counting.served, [])

    def test_a_bad_copy_from_a_deploying_session_fails_without_discouraging(self):
        """Fetching from one session with discourage=False: a bad copy fails the fetch, marked bad_copy,
        nothing stored, and that session stays open (the DEPLOY is answered instead)."""
        bad = self.source_peer("10.3.0.1")

        def corrupt(record, message, request_id):
            data = b"\x00" * min(message.length, len(self.data) - message.offset)
            record.send(m.Package(fid=message.fid, offset=message.offset, total_size=len(self.data), data=data),
                        response_to=request_id)

        bad.table.handlers[MessageType.FETCH] = corrupt
        self.net.run(1)
        session = self.peer.table.get(bad.node_id)
        if session is None:
            dialled = self.peer.table.dial("10.3.0.1", PORT)
            self.net.flush()
            session = self.successResultOf(dialled)
        d = self.fetcher().fetch(self.fid, len(self.data), [session], discourage=False)
        self.net.run(1)
        failure = self.failureResultOf(d, FetchFailed)
        self.assertTrue(failure.value.bad_copy)
        self.assertNotIn(self.fid, self.store)
        self.assertIsNone(self.store.partial(self.fid))
        self.assertTrue(session.ready)
        self.assertFalse(self.peer.table.is_banned(bad.node_id))
