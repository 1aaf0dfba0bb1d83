"""
RELAY (RFC 10.3), driven without sockets: real tracker and peer cores on
in-memory transports (tests/_memnet.py), a raw wire client, and a fake
host behind the peer's INVOKE and CANCEL handlers.
"""

from twisted.internet import defer, error
from twisted.trial.unittest import SynchronousTestCase

from orb.identity import NodeKey
from orb.net.adapter import OrbFactory, RemoteError, RequestTimeout, SessionHandler
from orb.net.sessions import Refusal
from orb.protocol import messages as m
from orb.protocol.codes import SUPPORTED_FEATURES, ErrorCode, ResultStatus, Role
from orb.protocol.frame import HEADER, FrameDecoder, encode_frame, network_magic
from orb.protocol.messages import MessageType
from orb.protocol.relay import BadInnerFrame, decode_inner, encode_inner, inner_header
from orb.protocol.session import LocalIdentity, SessionConfig
from orb.tracker import relay as trelay
from orb.peer import relay as prelay
from tests._memnet import PORT, MemoryNet

MAGIC = SessionConfig().magic
FID = bytes(range(32))


def invoke(data=b"x"):
    return m.Invoke(fid=FID, deadline_ms=5000, token=b"", input=data)


def ok(output):
    return m.Result(status=int(ResultStatus.OK), queue_us=1, fetch_us=0, boot_us=0, exec_us=2, output=output, log=b"")


class FakeHost:
    """The peer's INVOKE and CANCEL handlers: echoes the input, or holds calls for the test to answer."""

    def __init__(self, answer=True):
        self.answer = answer
        self.calls = []  # (record, message, request_id)
        self.cancels = []  # (record, request id)

    def install(self, peer):
        if peer.relay is None:  # a peer wires RELAY with its package store; these test peers have none
            peer.relay = prelay.RelayedCalls(peer.clock, peer.local, peer.table)
            peer.table.handlers.update(peer.relay.handlers())
            peer.table.lost_listeners.append(peer.relay.session_lost)
        peer.table.handlers[MessageType.INVOKE] = self.on_invoke
        peer.table.handlers[MessageType.CANCEL] = self.on_cancel

    def on_invoke(self, record, message, request_id):
        self.calls.append((record, message, request_id))
        if self.answer:
            record.send(ok(b"echo:" + message.input), response_to=request_id)

    def on_cancel(self, record, message, request_id):
        self.cancels.append((record, message.request_id))


class Client:
    """A raw wire client of a tracker: it sends what it likes and sees every frame that comes back."""

    def __init__(self, net, tracker_host, features=int(SUPPORTED_FEATURES), host="10.9.0.1"):
        self.key = NodeKey.generate()
        self.decoder = FrameDecoder(MAGIC)
        self.frames = []
        identity = LocalIdentity(self.key.public_bytes, int(Role.PEER), features=features)
        factory = OrbFactory(identity, SessionHandler(), net.clock, initiator=True, tls_binding=False,
                             observer=self._observe)
        d = net.connect(host, tracker_host, PORT, factory)
        self.protocol = d.result
        self.net = net
        net.flush()
        assert self.protocol.ready

    @property
    def node_id(self):
        return self.key.node_id

    def _observe(self, protocol, direction, data):
        if direction == "rx":
            self.frames.extend(f for f in self.decoder.feed(data) if not isinstance(f, Exception))

    def relay(self, target, frame):
        self.protocol.send(m.Relay(target=target, frame=frame))
        self.net.flush()

    def relays(self):
        return [f.message for f in self.frames if isinstance(f.message, m.Relay)]

    def errors(self):
        return [f.message for f in self.frames if isinstance(f.message, m.Error)]

    def inner(self, index=-1):
        return decode_inner(self.relays()[index].frame, MAGIC, 4 * 1024 * 1024)


class OneTrackerMixin:
    def setUp(self):
        self.net = MemoryNet()
        self.tracker = self.net.tracker("10.1.0.1")
        self.peer = self.net.peer("10.2.0.1", trackers=[("10.1.0.1", PORT)], listen=False, advertise=False)
        self.host = FakeHost()
        self.host.install(self.peer)
        self.net.run(2)
        self.client = Client(self.net, "10.1.0.1")


class TrackerForwardingTests(OneTrackerMixin, SynchronousTestCase):
    def test_a_relayed_invoke_reaches_a_peer_that_accepts_no_connections_and_its_answer_comes_back(self):
        """A caller's RELAY(INVOKE) reaches the relayed peer as from the caller; its RESULT returns in RELAY."""
        self.assertEqual(self.tracker.registry.peer(self.peer.node_id).reachability, "relayed")
        self.client.relay(self.peer.node_id, encode_inner(MAGIC, invoke(b"hi"), 17))
        ((record, message, request_id),) = self.host.calls
        self.assertEqual((record.node_id, message.input, request_id), (self.client.node_id, b"hi", 17))
        (back,) = self.client.relays()
        self.assertEqual(back.target, self.peer.node_id)
        answer = self.client.inner()
        self.assertEqual((answer.request_id, answer.is_response, answer.message.output), (17, True, b"echo:hi"))

    def test_an_unknown_target_is_not_found_inside_the_relay(self):
        """A RELAY to a node the tracker has no session with ends the inner request with ERROR(not_found)."""
        nobody = NodeKey.generate().node_id
        self.client.relay(nobody, encode_inner(MAGIC, invoke(), 5))
        (back,) = self.client.relays()
        answer = self.client.inner()
        self.assertEqual(back.target, nobody)
        self.assertEqual((answer.request_id, answer.is_response), (5, True))
        self.assertEqual((answer.message.code, answer.message.ref_request_id), (ErrorCode.NOT_FOUND, 5))

    def test_an_unknown_target_of_a_notification_gets_an_outer_error(self):
        """An undeliverable inner notification (CANCEL) is refused with an outer ERROR(not_found)."""
        self.client.relay(NodeKey.generate().node_id, encode_inner(MAGIC, m.Cancel(request_id=3)))
        self.assertEqual([e.code for e in self.client.errors()], [ErrorCode.NOT_FOUND])
        self.assertEqual(self.client.relays(), [])

    def test_a_nested_relay_is_unexpected_and_not_forwarded(self):
        """RELAY inside RELAY is refused with ERROR(unexpected); the peer sees nothing, the session goes on."""
        nested = encode_inner(MAGIC, m.Relay(target=self.peer.node_id, frame=encode_inner(MAGIC, invoke(), 1)))
        self.client.relay(self.peer.node_id, nested)
        self.assertEqual([e.code for e in self.client.errors()], [ErrorCode.UNEXPECTED])
        self.assertEqual(self.host.calls, [])
        self.assertTrue(self.client.protocol.ready)

    def test_a_handshake_frame_is_never_relayed(self):
        """HELLO_ACK inside RELAY is refused with ERROR(unexpected)."""
        ack = m.HelloAck(version=1, node_id=self.client.node_id, public_key=self.client.key.public_bytes, roles=1,
                         features=0, timestamp=0, nonce=1, observed=m.Endpoint("10.0.0.1", 1), listen=(),
                         user_agent="x")
        self.client.relay(self.peer.node_id, encode_inner(MAGIC, ack))
        self.assertEqual([e.code for e in self.client.errors()], [ErrorCode.UNEXPECTED])

    def test_a_bad_inner_header_is_malformed(self):
        """Another network's magic, a length that does not match and a short frame are each ERROR(malformed)."""
        good = encode_inner(MAGIC, invoke(), 1)
        self.client.relay(self.peer.node_id, encode_frame(network_magic("other"), invoke(), 1))
        self.client.relay(self.peer.node_id, good + b"\x00")
        self.client.relay(self.peer.node_id, good[:10])
        self.assertEqual([e.code for e in self.client.errors()], [ErrorCode.MALFORMED] * 3)
        self.assertEqual(self.host.calls, [])
        self.assertTrue(self.client.protocol.ready)

    def test_relay_needs_the_feature_negotiated(self):
        """A session that did not negotiate RELAY gets ERROR(unsupported) and nothing is forwarded."""
        plain = Client(self.net, "10.1.0.1", features=0, host="10.9.0.2")
        plain.relay(self.peer.node_id, encode_inner(MAGIC, invoke(), 1))
        self.assertEqual([e.code for e in plain.errors()], [ErrorCode.UNSUPPORTED])
        self.assertEqual(self.host.calls, [])

    def test_relayed_requests_in_flight_are_bounded_per_session(self):
        """Past MAX_RELAYED_IN_FLIGHT unanswered inner requests, the next is refused rate_limited; an answer frees one."""
        self.host.answer = False
        for request_id in range(1, trelay.MAX_RELAYED_IN_FLIGHT + 1):
            self.client.relay(self.peer.node_id, encode_inner(MAGIC, invoke(), request_id))
        self.assertEqual(self.client.relays(), [])
        self.client.relay(self.peer.node_id, encode_inner(MAGIC, invoke(), 1000))
        refused = self.client.inner()
        self.assertEqual((refused.request_id, refused.message.code), (1000, ErrorCode.RATE_LIMITED))
        self.assertEqual(len(self.host.calls), trelay.MAX_RELAYED_IN_FLIGHT)
        record, _, request_id = self.host.calls[0]
        record.send(ok(b"late"), response_to=request_id)
        self.net.flush()
        self.client.relay(self.peer.node_id, encode_inner(MAGIC, invoke(), 1001))
        self.assertEqual(len(self.host.calls), trelay.MAX_RELAYED_IN_FLIGHT + 1)

    def test_a_relayed_cancel_frees_its_request(self):
        """A CANCEL through the relay ends the request it names at the tracker, so it no longer counts."""
        self.host.answer = False
        for request_id in range(1, trelay.MAX_RELAYED_IN_FLIGHT + 1):
            self.client.relay(self.peer.node_id, encode_inner(MAGIC, invoke(), request_id))
        self.client.relay(self.peer.node_id, encode_inner(MAGIC, m.Cancel(request_id=1)))
        self.assertEqual([request_id for _, request_id in self.host.cancels], [1])
        self.client.relay(self.peer.node_id, encode_inner(MAGIC, invoke(), 2000))
        self.assertEqual(self.host.calls[-1][2], 2000)

    def test_relayed_frames_are_rate_limited_per_session(self):
        """Past the frame burst, a session's relayed frames are refused rate_limited; another session is untouched."""
        cancel = encode_inner(MAGIC, m.Cancel(request_id=99))
        for _ in range(trelay.RELAY_FRAMES_BURST + 5):
            self.client.protocol.send(m.Relay(target=self.peer.node_id, frame=cancel))
        self.net.flush()
        self.assertEqual({e.code for e in self.client.errors()}, {ErrorCode.RATE_LIMITED})
        self.assertEqual(len(self.client.errors()), 5)
        other = Client(self.net, "10.1.0.1", host="10.9.0.3")
        other.relay(self.peer.node_id, encode_inner(MAGIC, invoke(b"2"), 1))
        self.assertEqual(other.inner().message.output, b"echo:2")

    def test_a_relay_to_a_target_that_does_not_read_is_refused(self):
        """While the target's output is paused, relayed requests to it are refused rate_limited."""
        session = self.tracker.table.get(self.peer.node_id)
        session.protocol.pauseProducing()
        self.client.relay(self.peer.node_id, encode_inner(MAGIC, invoke(), 1))
        self.assertEqual(self.client.inner().message.code, ErrorCode.RATE_LIMITED)
        self.assertEqual(self.host.calls, [])


class PeerSideTests(OneTrackerMixin, SynchronousTestCase):
    def tracker_session_score(self):
        return self.peer.table.get(self.tracker.node_id).score

    def test_a_bad_inner_body_is_dropped_and_the_tracker_is_not_blamed(self):
        """An inner INVOKE whose body does not decode is dropped; the peer keeps its tracker session, unscored."""
        good = encode_inner(MAGIC, invoke(), 1)
        body = good[HEADER.size:]
        broken = HEADER.pack(MAGIC, 1, MessageType.INVOKE, 0, 1, 3) + body[:3]
        self.client.relay(self.peer.node_id, broken)
        self.assertEqual((self.peer.relay.dropped, self.host.calls, self.client.relays()), (1, [], []))
        self.assertEqual(self.tracker_session_score(), 0)
        self.client.relay(self.peer.node_id, good)
        self.assertEqual(len(self.host.calls), 1)

    def test_an_origin_that_keeps_sending_bad_frames_is_ignored(self):
        """An origin whose relayed frames keep failing is ignored for a day; other origins are still served."""
        broken = HEADER.pack(MAGIC, 1, MessageType.INVOKE, 0, 1, 1) + b"\x00"
        for _ in range(10):
            self.client.relay(self.peer.node_id, broken)
        self.client.relay(self.peer.node_id, encode_inner(MAGIC, invoke(), 2))
        self.assertEqual(self.host.calls, [])
        other = Client(self.net, "10.1.0.1", host="10.9.0.3")
        other.relay(self.peer.node_id, encode_inner(MAGIC, invoke(b"ok"), 2))
        self.assertEqual(other.inner().message.output, b"echo:ok")

    def test_a_repeated_request_id_is_unexpected(self):
        """A second inner request with an id still in flight is answered ERROR(unexpected), not run."""
        self.host.answer = False
        self.client.relay(self.peer.node_id, encode_inner(MAGIC, invoke(), 7))
        self.client.relay(self.peer.node_id, encode_inner(MAGIC, invoke(), 7))
        self.assertEqual(len(self.host.calls), 1)
        self.assertEqual(self.client.inner().message.code, ErrorCode.UNEXPECTED)

    def test_a_request_a_host_does_not_serve_through_a_relay_is_unsupported(self):
        """An inner FETCH is answered ERROR(unsupported): only a host's calls are served through a relay."""
        fetch = m.Fetch(fid=FID, offset=0, length=10)
        self.client.relay(self.peer.node_id, encode_inner(MAGIC, fetch, 4))
        answer = self.client.inner()
        self.assertEqual((answer.request_id, answer.message.code), (4, ErrorCode.UNSUPPORTED))

    def test_in_flight_requests_are_bounded_per_origin_at_the_peer(self):
        """Past MAX_IN_FLIGHT_PER_ORIGIN relayed requests from one origin, the peer answers rate_limited."""
        self.host.answer = False
        self.tracker.relayer._over_bounds = lambda *args: None  # the tracker's own bound would stop it first
        for request_id in range(1, prelay.MAX_IN_FLIGHT_PER_ORIGIN + 2):
            self.client.relay(self.peer.node_id, encode_inner(MAGIC, invoke(), request_id))
        self.assertEqual(len(self.host.calls), prelay.MAX_IN_FLIGHT_PER_ORIGIN)
        self.assertEqual(self.client.inner().message.code, ErrorCode.RATE_LIMITED)

    def test_cancel_reaches_the_host_on_the_same_record_and_no_answer_follows(self):
        """A relayed CANCEL reaches the CANCEL handler with the INVOKE's record; a RESULT sent after it is dropped."""
        self.host.answer = False
        self.client.relay(self.peer.node_id, encode_inner(MAGIC, invoke(), 9))
        self.client.relay(self.peer.node_id, encode_inner(MAGIC, m.Cancel(request_id=9)))
        record, _, _ = self.host.calls[0]
        self.assertEqual(self.host.cancels, [(record, 9)])
        record.send(ok(b"too late"), response_to=9)
        self.net.flush()
        self.assertEqual(self.client.relays(), [])

    def test_losing_the_tracker_session_withdraws_its_relayed_calls(self):
        """When the tracker session goes, the host's relayed calls through it are cancelled: nobody can get the answer."""
        self.host.answer = False
        self.client.relay(self.peer.node_id, encode_inner(MAGIC, invoke(), 1))
        self.client.relay(self.peer.node_id, encode_inner(MAGIC, invoke(), 2))
        self.net.cut("10.2.0.1")
        record = self.host.calls[0][0]
        self.assertEqual(self.host.cancels, [(record, 1), (record, 2)])

    def test_relay_from_a_non_tracker_is_unsupported(self):
        """A peer takes RELAY only from a tracker: from another node it is ERROR(unsupported)."""
        record = self.peer.table.get(self.tracker.node_id)
        sent = []
        fake = type("R", (), {"is_tracker": False, "remote": record.remote, "protocol": record.protocol,
                              "send": lambda self, msg, response_to=0: sent.append(msg)})()
        self.peer.relay.on_relay(fake, m.Relay(target=self.client.node_id, frame=encode_inner(MAGIC, invoke(), 1)), 0)
        self.assertEqual([msg.code for msg in sent], [ErrorCode.UNSUPPORTED])
        self.assertEqual(self.host.calls, [])


class CrossTrackerTests(SynchronousTestCase):
    """t2 calls a peer homed on t1, that has no session with t2, through t1."""

    def setUp(self):
        self.net = MemoryNet()
        self.t1 = self.net.tracker("10.1.0.1")
        self.t2 = self.net.tracker("10.1.0.2", join=[("10.1.0.1", PORT)])
        self.net.run(3)
        self.peer = self.net.peer("10.2.0.1", trackers=[("10.1.0.1", PORT)], listen=False, advertise=False,
                                  outbound_trackers=1)
        self.t2.table.admission.append(
            lambda record: Refusal("test: this peer reaches t1 only") if record.node_id == self.peer.node_id else None)
        self.host = FakeHost()
        self.host.install(self.peer)
        self.net.run(3)
        self.assertNotIn(self.peer.node_id, self.t2.table)
        self.assertEqual(self.t2.registry.peer(self.peer.node_id).home, self.t1.node_id)

    def call(self, message=None, timeout_s=10.0):
        channel = self.t2.relayer.channel(self.peer.node_id)
        d = channel.request(message or invoke(b"far"), timeout_s)
        self.net.flush()
        return d

    def test_the_channel_to_a_peer_homed_elsewhere_is_a_relay_through_its_home(self):
        """The channel to a peer homed on t1 is route "relay" via t1; at t1 it is the direct session."""
        channel = self.t2.relayer.channel(self.peer.node_id)
        self.assertEqual((channel.route, channel.via.node_id), ("relay", self.t1.node_id))
        self.assertEqual(self.t1.relayer.channel(self.peer.node_id).route, "direct")
        self.assertIsNone(self.t2.relayer.channel(NodeKey.generate().node_id))

    def test_a_call_from_the_other_tracker_runs_at_the_peer_and_returns(self):
        """INVOKE through t2's relay channel runs at the peer as from t2, and its RESULT comes back."""
        result = self.successResultOf(self.call())
        self.assertEqual(result.output, b"echo:far")
        ((record, _, _),) = self.host.calls
        self.assertEqual(record.node_id, self.t2.node_id)

    def test_an_error_from_the_peer_fails_the_call(self):
        """An ERROR answer through the relay fails the request with RemoteError and its code."""
        del self.peer.table.handlers[MessageType.INVOKE]
        failure = self.failureResultOf(self.call(), RemoteError)
        self.assertEqual(failure.value.code, ErrorCode.UNSUPPORTED)

    def test_cancelling_the_call_sends_cancel_through_the_relay(self):
        """Cancelling the request's Deferred sends CANCEL through both trackers to the host (RFC 10.5)."""
        self.host.answer = False
        d = self.call()
        d.cancel()
        self.net.flush()
        self.failureResultOf(d, defer.CancelledError)
        ((record, _, request_id),) = self.host.calls
        self.assertEqual(self.host.cancels, [(record, request_id)])

    def test_a_call_that_times_out_is_cancelled_at_the_host(self):
        """A relayed request unanswered within its timeout fails RequestTimeout and the host gets CANCEL."""
        self.host.answer = False
        d = self.call(timeout_s=2.0)
        self.net.run(3)
        self.failureResultOf(d, RequestTimeout)
        self.assertEqual(len(self.host.cancels), 1)

    def test_losing_the_home_session_fails_the_call(self):
        """When the session with the home tracker goes, its relayed requests fail with ConnectionLost."""
        self.host.answer = False
        d = self.call()
        self.t2.table.get(self.t1.node_id).protocol.transport.loseConnection()
        self.net.flush()
        self.failureResultOf(d, error.ConnectionLost)

    def test_a_client_cannot_relay_a_request_to_a_tracker(self):
        """A caller's RELAY(INVOKE) naming a tracker is not_found: a tracker takes only answers through a relay."""
        client = Client(self.net, "10.1.0.1")
        client.relay(self.t2.node_id, encode_inner(MAGIC, invoke(), 8))
        answer = client.inner()
        self.assertEqual((client.relays()[-1].target, answer.message.code), (self.t2.node_id, ErrorCode.NOT_FOUND))

    def test_an_answer_from_a_tracker_that_matches_nothing_is_dropped(self):
        """A RELAY answer arriving from a tracker for no request of ours is dropped, never forwarded to a peer."""
        before = self.t2.relayer.forwarded
        via = self.t2.table.get(self.t1.node_id)
        frame = encode_inner(MAGIC, ok(b"stray"), 12345, response=True)
        self.t2.relayer.on_relay(via, m.Relay(target=self.peer.node_id, frame=frame), 0)
        self.assertEqual(self.t2.relayer.forwarded, before)

    def test_relayed_calls_to_one_peer_are_bounded(self):
        """Past MAX_OWN_RELAYED_PER_PEER outstanding calls to one peer, the next fails busy at once."""
        self.host.answer = False
        for _ in range(trelay.MAX_OWN_RELAYED_PER_PEER):
            self.call()
        failure = self.failureResultOf(self.call(), RemoteError)
        self.assertEqual(failure.value.code, ErrorCode.BUSY)


class InnerFrameTests(SynchronousTestCase):
    def test_inner_header_checks_and_strict_decode(self):
        """The inner-frame checks: a good frame passes; trailing bytes, nesting and oversize are refused with their codes."""
        good = encode_inner(MAGIC, invoke(), 3)
        self.assertEqual(inner_header(good, MAGIC, 1 << 20).request_id, 3)
        self.assertEqual(decode_inner(good, MAGIC, 1 << 20).message, invoke())
        cases = [
            (good + b"!", ErrorCode.MALFORMED),
            (encode_inner(MAGIC, m.Relay(target=FID, frame=b"")), ErrorCode.UNEXPECTED),
            (good, ErrorCode.FRAME_TOO_LARGE, 8),
        ]
        for frame, code, *limit in cases:
            with self.assertRaises(BadInnerFrame) as caught:
                decode_inner(frame, MAGIC, limit[0] if limit else 1 << 20)
            self.assertEqual(caught.exception.code, code)


class NoListenOptionTests(SynchronousTestCase):
    def test_no_listen_means_no_endpoint(self):
        """`orb-peer --no-listen` configures no listener; with --advertise it is a usage error."""
        from orb.peer.tap import Options

        options = Options()
        options.parseOptions(["--no-listen", "--data-dir", self.mktemp()])
        self.assertIsNone(options.node_config("x").listen)
        with self.assertRaises(SystemExit):
            Options().parseOptions(["--no-listen", "--advertise", "127.0.0.1:1", "--data-dir", self.mktemp()])
