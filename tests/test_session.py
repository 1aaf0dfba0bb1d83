"""
The sans-I/O session: handshake, negotiation, timeouts and keepalive on
a task.Clock, limits, and refusal of bad input. No sockets.
"""

import os

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from orb.protocol import messages as m
from orb.protocol.codes import ErrorCode, Feature, Role
from orb.protocol.frame import HEADER, Flag, FrameDecoder, encode_frame
from orb.protocol.session import (
    AddrThrottled,
    ErrorReceived,
    HandshakeCompleted,
    LocalIdentity,
    MessageReceived,
    Misbehaved,
    RttMeasured,
    Session,
    SessionConfig,
    SessionFailed,
    SessionNotReady,
    State,
    node_id_for,
)

CONFIG = SessionConfig(network="devnet")
# An ANNOUNCE of the right shape (the session does not check its signature: the tracker does).
ANNOUNCE = m.Announce(seq=1, time=0, load_permille=0, roles=1, listen=(), functions=(), signature=bytes(64))
PEER_ADDR = m.Endpoint("127.0.0.1", 50123)
TRACKER_ADDR = m.Endpoint("127.0.0.1", 7400)


def identity(roles=Role.PEER, **kw):
    return LocalIdentity(os.urandom(32), int(roles), **kw)


def make_pair(clock=None, client_kw=None, server_kw=None, client_identity=None, server_identity=None):
    clock = clock or Clock()
    client = Session(
        client_identity or identity(Role.PEER), clock, initiator=True, remote_address=TRACKER_ADDR,
        **{"config": CONFIG, **(client_kw or {})},
    )
    server = Session(
        server_identity or identity(Role.TRACKER), clock, initiator=False, remote_address=PEER_ADDR,
        **{"config": CONFIG, **(server_kw or {})},
    )
    client.connection_made()
    server.connection_made()
    return clock, client, server


def handshake(client, server):
    server_events = server.feed(client.data_to_send())
    client_events = client.feed(server.data_to_send())
    return client_events, server_events


def ready_pair(**kw):
    clock, client, server = make_pair(**kw)
    handshake(client, server)
    return clock, client, server


def decode_all(session, data):
    """Decode what a session sent, as its remote would see it."""
    return FrameDecoder(session.config.magic).feed(data)


def sent_errors(session):
    return [f.message for f in decode_all(session, session.data_to_send()) if isinstance(f.message, m.Error)]


class HandshakeTests(SynchronousTestCase):
    def test_handshake_completes_on_both_sides(self):
        """HELLO then HELLO_ACK makes both ends READY, each knowing the other's node id."""
        clock, client, server = make_pair()
        client_events, server_events = handshake(client, server)
        self.assertEqual(client.state, State.READY)
        self.assertEqual(server.state, State.READY)
        (done,) = client_events
        self.assertIsInstance(done, HandshakeCompleted)
        self.assertEqual(done.remote.node_id, server.identity.node_id)
        self.assertEqual(server_events[0].remote.node_id, client.identity.node_id)

    def test_observed_address(self):
        """A peer learns its address as the tracker sees it from HELLO_ACK."""
        _, client, server = ready_pair()
        self.assertEqual(client.remote.observed_us, PEER_ADDR)
        self.assertEqual(server.remote.observed_us, TRACKER_ADDR)

    def test_hello_ack_lists_the_listen_addresses(self):
        """The responder's HELLO_ACK carries the addresses it accepts connections on, as HELLO does."""
        listen = (m.Endpoint("127.0.0.1", 7400), m.Endpoint("::1", 7400))
        _, client, server = ready_pair(
            client_identity=identity(listen=(m.Endpoint("127.0.0.1", 7401),)),
            server_identity=identity(Role.TRACKER, listen=listen),
        )
        self.assertEqual(client.remote.listen, listen)
        self.assertEqual(server.remote.listen, (m.Endpoint("127.0.0.1", 7401),))

    def test_listen_source_is_read_at_handshake_time(self):
        """An address learned after the identity was built (port 0 bound later) is still advertised."""
        bound = []
        server_identity = LocalIdentity(os.urandom(32), int(Role.TRACKER), listen_source=lambda: bound)
        clock, client, server = make_pair(server_identity=server_identity)
        bound.extend([("127.0.0.1", 41234), ("127.0.0.1", 41234)])  # the listener binds after the factory exists
        handshake(client, server)
        self.assertEqual(client.remote.listen, (m.Endpoint("127.0.0.1", 41234),))

    def test_listen_addresses_are_capped(self):
        """At most 8 listen addresses are advertised, so HELLO_ACK always encodes."""
        many = [m.Endpoint("10.0.0.1", 7000 + i) for i in range(12)]
        ident = LocalIdentity(os.urandom(32), int(Role.TRACKER), listen_source=lambda: many)
        self.assertEqual(ident.advertised_listen(), tuple(many[:8]))

    def test_features_are_negotiated(self):
        """Only the features both ends advertise are in effect on the session."""
        _, client, server = ready_pair(
            client_identity=identity(features=int(Feature.RELAY | Feature.CHUNKED_PACKAGE)),
            server_identity=identity(Role.TRACKER, features=int(Feature.RELAY | Feature.FEDERATION)),
        )
        self.assertEqual(client.remote.features, Feature.RELAY)
        self.assertEqual(server.remote.features, Feature.RELAY)

    def test_highest_common_version(self):
        """The session runs at the highest protocol version both ends speak."""
        clock, client, server = make_pair(
            client_kw={"config": attrs.evolve(CONFIG, versions=(1, 2, 3))},
            server_kw={"config": attrs.evolve(CONFIG, versions=(1, 2))},
        )
        handshake(client, server)
        self.assertEqual((client.version, server.version), (2, 2))
        self.assertEqual(client.remote.version, 2)

    def test_no_common_version(self):
        """A HELLO with no version in common is refused with ERROR(version) and the session ends."""
        clock, client, server = make_pair(
            client_kw={"config": attrs.evolve(CONFIG, versions=(1, 2))},
            server_kw={"config": attrs.evolve(CONFIG, versions=(1, 3))},
        )
        client_hello = decode_all(client, client.data_to_send())[0].message
        # The client advertises 1 and 2; pretend it only speaks 2.
        hello = attrs.evolve(client_hello, versions=(2,))
        (failed,) = server.feed(encode_frame(CONFIG.magic, hello))
        self.assertIsInstance(failed, SessionFailed)
        self.assertEqual(failed.error.code, ErrorCode.VERSION)
        self.assertEqual(server.state, State.ERROR)
        self.assertEqual([e.code for e in sent_errors(server)], [ErrorCode.VERSION])

    def test_anything_but_hello_first_is_refused(self):
        """A responder whose first frame is not HELLO sends ERROR(unexpected) and closes."""
        clock, client, server = make_pair()
        client.data_to_send()
        (failed,) = server.feed(encode_frame(CONFIG.magic, m.GetAddr(), 1))
        self.assertIsInstance(failed, SessionFailed)
        self.assertEqual(failed.error.code, ErrorCode.UNEXPECTED)
        self.assertEqual(sent_errors(server)[0].code, ErrorCode.UNEXPECTED)
        self.assertEqual(server.state, State.ERROR)

    def test_self_connection_by_nonce(self):
        """A node that dials itself sees its own HELLO nonce and refuses with ERROR(self_connection)."""
        clock = Clock()
        nonces = set()
        me = identity()
        client = Session(me, clock, initiator=True, remote_address=TRACKER_ADDR, config=CONFIG)
        nonces.add(client.local_nonce)
        server = Session(identity(), clock, initiator=False, remote_address=PEER_ADDR, config=CONFIG,
                         is_own_nonce=nonces.__contains__)
        client.connection_made()
        server.connection_made()
        (failed,) = server.feed(client.data_to_send())
        self.assertEqual(failed.error.code, ErrorCode.SELF_CONNECTION)

    def test_self_connection_by_node_id(self):
        """A HELLO carrying the responder's own node id is refused with ERROR(self_connection)."""
        me = identity()
        clock, client, server = make_pair(client_identity=me, server_identity=me)
        (failed,) = server.feed(client.data_to_send())
        self.assertEqual(failed.error.code, ErrorCode.SELF_CONNECTION)

    def test_node_id_must_hash_the_key(self):
        """A HELLO whose node id is not SHA-256 of its key is refused with ERROR(identity)."""
        clock, client, server = make_pair()
        hello = decode_all(client, client.data_to_send())[0].message
        forged = attrs.evolve(hello, node_id=b"\x01" * 32)
        (failed,) = server.feed(encode_frame(CONFIG.magic, forged))
        self.assertEqual(failed.error.code, ErrorCode.IDENTITY)

    def test_certificate_key_must_match_hello(self):
        """A HELLO key that differs from the TLS certificate key is refused with ERROR(identity)."""
        clock, client, server = make_pair()
        server.certificate_key = os.urandom(32)  # what TLS saw differs from HELLO
        (failed,) = server.feed(client.data_to_send())
        self.assertEqual(failed.error.code, ErrorCode.IDENTITY)
        self.assertIn("certificate", failed.error.message)

    def test_certificate_key_matching_hello_passes(self):
        """A HELLO whose key matches the TLS certificate completes the handshake."""
        clock, client, server = make_pair()
        server.certificate_key = client.identity.public_key
        (done,) = server.feed(client.data_to_send())
        self.assertIsInstance(done, HandshakeCompleted)

    def test_dialled_node_id_must_match(self):
        """Dialling a known node id and reaching another node fails with ERROR(identity)."""
        clock, client, server = make_pair(client_kw={"expected_node_id": node_id_for(b"\x00" * 32)})
        server.feed(client.data_to_send())
        (failed,) = client.feed(server.data_to_send())
        self.assertEqual(failed.error.code, ErrorCode.IDENTITY)

    def test_handshake_timeout(self):
        """A handshake not finished 10 s after connecting ends with ERROR(timeout)."""
        clock, client, server = make_pair()
        self.assertEqual(server.next_deadline(), 10.0)
        clock.advance(9.9)
        self.assertEqual(server.tick(), [])
        clock.advance(0.1)
        (failed,) = server.tick()
        self.assertEqual(failed.error.code, ErrorCode.TIMEOUT)
        self.assertEqual(sent_errors(server)[0].code, ErrorCode.TIMEOUT)

    def test_send_before_ready_is_our_bug(self):
        """Sending an ordinary message before READY is refused locally, not put on the wire."""
        clock, client, server = make_pair()
        self.assertRaises(SessionNotReady, client.send, m.GetAddr())


class KeepaliveTests(SynchronousTestCase):
    def test_ping_after_idle_and_rtt(self):
        """After 30 s of silence the session PINGs, and the PONG yields the round-trip time."""
        clock, client, server = ready_pair()
        self.assertEqual(client.next_deadline(), 30.0)
        clock.advance(30)
        client.tick()
        (ping,) = decode_all(client, client.data_to_send())
        self.assertIsInstance(ping.message, m.Ping)
        self.assertEqual(server.feed(encode_frame(CONFIG.magic, ping.message, ping.request_id)), [])
        clock.advance(0.025)
        (rtt,) = client.feed(server.data_to_send())
        self.assertIsInstance(rtt, RttMeasured)
        self.assertAlmostEqual(rtt.rtt_ms, 25.0)
        self.assertEqual(client.state, State.READY)

    def test_idle_timeout_closes(self):
        """A session silent for 90 s despite a PING ends with ERROR(timeout)."""
        clock, client, server = ready_pair()
        clock.advance(30)
        client.tick()
        client.data_to_send()  # the PING goes unanswered
        self.assertEqual(client.next_deadline(), 90.0)
        clock.advance(60)
        (failed,) = client.tick()
        self.assertEqual(failed.error.code, ErrorCode.TIMEOUT)
        self.assertEqual(client.state, State.ERROR)

    def test_a_remote_that_talks_but_never_pongs_is_closed(self):
        """Traffic without a PONG does not keep a session alive: 60 s after an unanswered PING it ends with ERROR(timeout)."""
        clock, client, server = ready_pair()
        self.assertNotEqual(client.ping(), b"")
        self.assertEqual(client.ping(), b"")  # one PING outstanding at a time: nothing piles up
        for _ in range(59):
            clock.advance(1)
            server.send(m.GetAddr())
            client.feed(server.send(m.Addr(entries=())))
            self.assertEqual(client.tick(), [])
        clock.advance(1)
        (failed,) = client.tick()
        self.assertEqual(failed.error.code, ErrorCode.TIMEOUT)
        self.assertIn("no PONG", failed.error.message)

    def test_a_handshake_frame_is_bounded_before_ready(self):
        """Before READY a header announcing more than 16 KiB is refused, though READY sessions take 4 MiB frames."""
        clock = Clock()
        server = Session(LocalIdentity(os.urandom(32), int(Role.TRACKER)), clock, initiator=False,
                         remote_address=m.Endpoint("127.0.0.1", 1), config=CONFIG)
        server.connection_made()
        events = server.feed(HEADER.pack(CONFIG.magic, 1, int(m.MessageType.HELLO), 0, 0, 16 * 1024 + 1))
        self.assertEqual([e.error.code for e in events], [ErrorCode.FRAME_TOO_LARGE])

    def test_traffic_defers_keepalive(self):
        """Any received frame postpones the keepalive PING."""
        clock, client, server = ready_pair()
        clock.advance(20)
        client.feed(server.send(ANNOUNCE))
        self.assertEqual(client.next_deadline(), 50.0)


class RequestTests(SynchronousTestCase):
    def test_request_and_response(self):
        """A response is matched to its request by request id, and the request stops being outstanding."""
        clock, client, server = ready_pair()
        request_id, data = client.request(m.Lookup(fid=b"\x01" * 33, max_replicas=2))
        (got,) = server.feed(data)
        self.assertEqual(got, MessageReceived(m.Lookup(fid=b"\x01" * 33, max_replicas=2), request_id, False))
        reply = server.send(m.Peers(fid=b"\x01" * 33, replicas=()), response_to=request_id)
        (answer,) = client.feed(reply)
        self.assertTrue(answer.is_response)
        self.assertEqual(answer.request_id, request_id)
        self.assertEqual(client.pending_requests, 0)

    def test_unsolicited_response_is_refused_but_survived(self):
        """A response to no request of ours gets an ERROR notification with ref 0; the session goes on."""
        clock, client, server = ready_pair()
        (event,) = client.feed(encode_frame(CONFIG.magic, m.Peers(fid=b"\x01", replicas=()), 77, Flag.RESPONSE))
        self.assertIsInstance(event, Misbehaved)
        self.assertEqual(event.error.code, ErrorCode.UNEXPECTED)
        (frame,) = decode_all(client, client.data_to_send())
        # Id 77 is in our own id space: naming it would end the remote's own request 77.
        self.assertEqual((frame.request_id, frame.flags), (0, 0))
        self.assertEqual((frame.message.code, frame.message.ref_request_id), (ErrorCode.UNEXPECTED, 0))
        self.assertIn("77", frame.message.text)
        self.assertEqual(client.state, State.READY)

    def test_a_result_for_an_invoke_never_sent_is_refused_but_survived(self):
        """A RESULT answering no INVOKE of ours is ERROR(unexpected) with ref 0, and the session stays READY."""
        clock, client, server = ready_pair()
        result = m.Result(status=0, queue_us=0, fetch_us=0, boot_us=0, exec_us=0, output=b"forged", log=b"")
        (event,) = client.feed(encode_frame(CONFIG.magic, result, 9, Flag.RESPONSE))
        self.assertIsInstance(event, Misbehaved)
        self.assertEqual(event.error.code, ErrorCode.UNEXPECTED)
        (frame,) = decode_all(client, client.data_to_send())
        self.assertEqual((frame.message.code, frame.message.ref_request_id), (ErrorCode.UNEXPECTED, 0))
        self.assertEqual(client.state, State.READY)

    def test_wrong_response_type(self):
        """A response of the wrong type for its request is refused, not delivered."""
        clock, client, server = ready_pair()
        request_id, data = client.request(m.Lookup(fid=b"\x01", max_replicas=2))
        server.feed(data)
        (event,) = client.feed(server.send(m.Proof(fid=b"\x01", digest=b"\x00" * 32), response_to=request_id))
        self.assertIsInstance(event, Misbehaved)

    def test_in_flight_limit(self):
        """Requests beyond the in-flight limit get ERROR(rate_limited); answering one makes room."""
        clock, client, server = ready_pair(server_kw={"config": attrs.evolve(CONFIG, max_inflight_requests=2)})
        frames = [encode_frame(CONFIG.magic, m.Lookup(fid=b"\x01", max_replicas=1), rid) for rid in (1, 2, 3)]
        events = server.feed(b"".join(frames))
        self.assertEqual([type(e) for e in events], [MessageReceived, MessageReceived, Misbehaved])
        (err,) = sent_errors(server)
        self.assertEqual((err.code, err.ref_request_id), (ErrorCode.RATE_LIMITED, 3))
        server.send(m.Peers(fid=b"\x01", replicas=()), response_to=1)
        (again,) = server.feed(encode_frame(CONFIG.magic, m.Lookup(fid=b"\x01", max_replicas=1), 4))
        self.assertIsInstance(again, MessageReceived)

    def test_a_cancelled_request_frees_its_place(self):
        """An INVOKE withdrawn by CANCEL no longer counts against the in-flight limit (it will get no answer)."""
        clock, client, server = ready_pair(server_kw={"config": attrs.evolve(CONFIG, max_inflight_requests=1)})
        invoke = m.Invoke(fid=b"\x01", deadline_ms=1000, token=b"", input=b"")
        for rid in (1, 2, 3):
            frames = encode_frame(CONFIG.magic, invoke, rid) + encode_frame(CONFIG.magic, m.Cancel(request_id=rid), 0)
            events = server.feed(frames)
            self.assertEqual([type(e) for e in events], [MessageReceived, MessageReceived])
        self.assertEqual(sent_errors(server), [])

    def test_error_response(self):
        """An ERROR answering a request is reported with its code and frees the request."""
        clock, client, server = ready_pair()
        request_id, data = client.request(m.Invoke(fid=b"\x01", deadline_ms=1, token=b"", input=b""))
        server.feed(data)
        err = m.Error(code=ErrorCode.NOT_FOUND, ref_request_id=request_id, text="no such fid")
        (event,) = client.feed(server.send(err, response_to=request_id))
        self.assertEqual(event, ErrorReceived(ErrorCode.NOT_FOUND, "no such fid", request_id))
        self.assertEqual(client.pending_requests, 0)


class RequestIdTests(SynchronousTestCase):
    def test_late_response_is_dropped_silently(self):
        """A response to a request we gave up on is dropped without ERROR."""
        clock, client, server = ready_pair()
        request_id, data = client.request(m.Lookup(fid=b"\x01", max_replicas=1))
        server.feed(data)
        client.forget(request_id)  # the caller gave up (timeout)
        self.assertEqual(client.pending_requests, 0)
        late = server.send(m.Peers(fid=b"\x01", replicas=()), response_to=request_id)
        self.assertEqual(client.feed(late), [])
        self.assertEqual(client.data_to_send(), b"")  # no ERROR back: it is not misbehaviour

    def test_request_without_id_is_refused(self):
        """A request with request id 0 gets ERROR(unexpected); the session goes on."""
        clock, client, server = ready_pair()
        (event,) = server.feed(encode_frame(CONFIG.magic, m.Lookup(fid=b"\x01", max_replicas=1), 0))
        self.assertIsInstance(event, Misbehaved)
        self.assertEqual(sent_errors(server)[0].code, ErrorCode.UNEXPECTED)
        self.assertEqual(server.state, State.READY)

    def test_response_type_without_response_flag_is_refused(self):
        """A PEERS or PONG sent as if it were a notification gets ERROR(unexpected) and is not delivered."""
        clock, client, server = ready_pair()
        (event,) = server.feed(encode_frame(CONFIG.magic, m.Peers(fid=b"\x01", replicas=()), 0))
        self.assertIsInstance(event, Misbehaved)
        self.assertEqual(event.error.code, ErrorCode.UNEXPECTED)
        (event,) = server.feed(encode_frame(CONFIG.magic, m.Pong(nonce=1), 0))
        self.assertIsInstance(event, Misbehaved)
        self.assertEqual(server.state, State.READY)

    def test_notification_with_a_request_id_is_still_a_notification(self):
        """An ANNOUNCE sent with a nonzero request id is delivered; the id is ignored."""
        clock, client, server = ready_pair()
        (event,) = server.feed(encode_frame(CONFIG.magic, ANNOUNCE, 9))
        self.assertIsInstance(event, MessageReceived)
        self.assertEqual(server.data_to_send(), b"")

    def test_reused_request_id_is_refused(self):
        """A request reusing an id still outstanding gets ERROR(unexpected) answering that id."""
        clock, client, server = ready_pair()
        frame = encode_frame(CONFIG.magic, m.Lookup(fid=b"\x01", max_replicas=1), 7)
        first, second = server.feed(frame + frame)
        self.assertIsInstance(first, MessageReceived)
        self.assertIsInstance(second, Misbehaved)
        (err,) = sent_errors(server)
        self.assertEqual((err.code, err.ref_request_id), (ErrorCode.UNEXPECTED, 7))

    def test_error_notification_frees_the_request(self):
        """An ERROR notification whose ref_request_id names our request ends that request."""
        clock, client, server = ready_pair()
        request_id, data = client.request(m.Lookup(fid=b"\x01", max_replicas=1))
        error = m.Error(code=ErrorCode.BUSY, ref_request_id=request_id, text="busy")
        (event,) = client.feed(encode_frame(CONFIG.magic, error))  # no RESPONSE flag
        self.assertEqual(event.ref_request_id, request_id)
        self.assertEqual(client.pending_requests, 0)

    def test_error_during_handshake_ends_it(self):
        """An initiator that gets ERROR instead of HELLO_ACK stops without answering it."""
        clock, client, server = make_pair()
        client.data_to_send()
        refusal = m.Error(code=ErrorCode.BUSY, ref_request_id=0, text="too many inbound connections")
        (event,) = client.feed(encode_frame(CONFIG.magic, refusal))
        self.assertEqual(event.code, ErrorCode.BUSY)
        self.assertEqual(client.state, State.ERROR)
        self.assertEqual(client.data_to_send(), b"")  # an ERROR is never answered


class AddrRateTests(SynchronousTestCase):
    def entries(self, n):
        return tuple(m.AddrEntry(1, f"10.0.{i // 250}.{i % 250 + 1}", 7400, 1, os.urandom(32)) for i in range(n))

    def test_unsolicited_flood_is_throttled(self):
        """An unsolicited ADDR flood is cut to the token bucket; the excess is reported dropped."""
        clock, client, server = ready_pair()
        events = client.feed(server.send(m.Addr(entries=self.entries(1000))))
        throttled, delivered = events
        self.assertEqual(throttled, AddrThrottled(999))
        self.assertEqual(len(delivered.message.entries), 1)

    def test_bucket_refills(self):
        """The ADDR bucket refills at 0.1 entries per second."""
        clock, client, server = ready_pair()
        client.feed(server.send(m.Addr(entries=self.entries(1))))
        clock.advance(100)  # 0.1 entries/s -> 10 entries
        (delivered,) = [e for e in client.feed(server.send(m.Addr(entries=self.entries(10)))) if isinstance(e, MessageReceived)]
        self.assertEqual(len(delivered.message.entries), 10)

    def test_getaddr_credit_is_not_clamped_by_refill(self):
        """Credit from several GETADDRs is not cut back to the 1000-token burst by a refill."""
        clock, client, server = ready_pair()
        client.request(m.GetAddr())
        client.request(m.GetAddr())  # 1 + 2 x 1000 tokens, above the 1000 burst
        clock.advance(10)
        events = client.feed(server.send(m.Addr(entries=self.entries(1000))))
        events += client.feed(server.send(m.Addr(entries=self.entries(1000))))
        self.assertEqual([type(e) for e in events], [MessageReceived, MessageReceived])

    def test_getaddr_answer_is_not_throttled(self):
        """A full 1000-entry answer to our GETADDR is delivered whole."""
        clock, client, server = ready_pair()
        request_id, data = client.request(m.GetAddr())
        server.feed(data)
        events = client.feed(server.send(m.Addr(entries=self.entries(1000)), response_to=request_id))
        (delivered,) = events
        self.assertEqual(len(delivered.message.entries), 1000)
        self.assertTrue(delivered.is_response)


class BadInputTests(SynchronousTestCase):
    def test_unknown_type_gets_unsupported_and_session_goes_on(self):
        """An unknown type in READY gets ERROR(unsupported) answering it; the session serves on."""
        clock, client, server = ready_pair()
        events = server.feed(HEADER.pack(CONFIG.magic, 1, 0x99, 0, 12, 2) + b"zz")
        self.assertEqual(events[0].error.code, ErrorCode.UNSUPPORTED)
        (err,) = sent_errors(server)
        self.assertEqual((err.code, err.ref_request_id), (ErrorCode.UNSUPPORTED, 12))
        self.assertEqual(server.state, State.READY)
        request_id, data = client.request(m.GetAddr())
        self.assertIsInstance(server.feed(data)[0], MessageReceived)

    def test_oversized_frame(self):
        """A header announcing too large a body ends the session before the body is buffered."""
        clock, client, server = ready_pair()
        events = server.feed(HEADER.pack(CONFIG.magic, 1, m.MessageType.INVOKE, 0, 3, 64 * 1024 * 1024))
        self.assertEqual(events[0].error.code, ErrorCode.FRAME_TOO_LARGE)
        self.assertEqual(sent_errors(server)[0].code, ErrorCode.FRAME_TOO_LARGE)
        self.assertEqual(server.state, State.ERROR)
        self.assertEqual(server.feed(b"x" * 1000), [])  # refuses more input
        self.assertLess(server._decoder.buffered_bytes, 64)

    def test_wrong_magic_closes_without_error_frame(self):
        """Bytes from another network (or not ORB) close the session without an ERROR frame."""
        clock, client, server = make_pair()
        client.data_to_send()
        (failed,) = server.feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(failed.error.code, ErrorCode.NETWORK)
        self.assertEqual(server.data_to_send(), b"")

    def test_malformed_body(self):
        """A body that does not decode ends the session with ERROR(malformed)."""
        clock, client, server = ready_pair()
        (failed,) = server.feed(HEADER.pack(CONFIG.magic, 1, m.MessageType.PING, 0, 1, 3) + b"abc")
        self.assertEqual(failed.error.code, ErrorCode.MALFORMED)
        self.assertEqual(sent_errors(server)[0].code, ErrorCode.MALFORMED)

    def test_second_hello_is_unexpected_not_fatal(self):
        """A second HELLO after READY gets ERROR(unexpected); the session goes on."""
        clock, client, server = make_pair()
        hello = client.data_to_send()
        server.feed(hello)
        (event,) = server.feed(hello)
        self.assertIsInstance(event, Misbehaved)
        self.assertEqual(event.error.code, ErrorCode.UNEXPECTED)
        self.assertEqual(server.state, State.READY)

    def test_frame_version_must_match_session(self):
        """A frame of another version than the one negotiated ends the session with ERROR(version)."""
        clock, client, server = ready_pair(server_kw={"config": attrs.evolve(CONFIG, versions=(1, 2))})
        self.assertEqual(server.version, 1)  # the client speaks only 1
        frame = bytearray(encode_frame(CONFIG.magic, m.GetAddr(), 1))
        frame[4] = 2  # a version the server speaks, so its decoder lets it through to the session check
        self.assertEqual(FrameDecoder(CONFIG.magic, versions=(1, 2)).feed(bytes(frame))[0].version, 2)
        (failed,) = server.feed(bytes(frame))
        self.assertEqual(failed.error.code, ErrorCode.VERSION)
        self.assertIn("version-1 session", failed.error.message)

    def test_graceful_close(self):
        """close() sends ERROR(shutdown), which the remote reports with its code."""
        clock, client, server = ready_pair()
        client.close()
        self.assertEqual(client.state, State.CLOSING)
        (event,) = server.feed(client.data_to_send())
        self.assertEqual(event.code, ErrorCode.SHUTDOWN)


class ErrorRuleTests(SynchronousTestCase):
    """The rules of RFC 5.8 for sending and receiving ERROR."""

    def test_error_before_hello_closes_without_answer(self):
        """A responder that gets ERROR before HELLO ends the session and sends nothing back."""
        clock, client, server = make_pair()
        client.data_to_send()
        (event,) = server.feed(encode_frame(CONFIG.magic, m.Error(code=ErrorCode.BUSY, ref_request_id=0, text="no")))
        self.assertEqual(event, ErrorReceived(ErrorCode.BUSY, "no", 0))
        self.assertEqual(server.state, State.ERROR)
        self.assertEqual(server.data_to_send(), b"")
        self.assertEqual(server.feed(client.data_to_send() or b"more"), [])

    def test_error_about_a_notification_is_a_notification(self):
        """An ERROR about a frame with request id 0 has request id 0, no RESPONSE flag and ref 0."""
        clock, client, server = ready_pair()
        announce = attrs.evolve(ANNOUNCE, ext=(m.Tlv(0x8000 | 0x7ABC, b""),))
        (event,) = server.feed(encode_frame(CONFIG.magic, announce, 0))
        self.assertEqual(event.error.code, ErrorCode.UNSUPPORTED)
        (frame,) = decode_all(server, server.data_to_send())
        self.assertEqual((frame.request_id, frame.flags, frame.message.ref_request_id), (0, 0, 0))
        self.assertEqual(server.state, State.READY)

    def test_error_about_a_request_answers_it(self):
        """An ERROR about a request carries the RESPONSE flag and the request's id, in header and ref."""
        clock, client, server = ready_pair()
        server.feed(HEADER.pack(CONFIG.magic, 1, 0x99, 0, 12, 0))
        (frame,) = decode_all(server, server.data_to_send())
        self.assertEqual((frame.request_id, frame.flags, frame.message.ref_request_id), (12, Flag.RESPONSE, 12))

    def test_fatal_error_names_the_request_it_concerns(self):
        """A fatal ERROR about a malformed request is a notification whose ref is that request's id."""
        clock, client, server = ready_pair()
        server.feed(HEADER.pack(CONFIG.magic, 1, m.MessageType.LOOKUP, 0, 5, 1) + b"\x21")
        (frame,) = decode_all(server, server.data_to_send())
        self.assertEqual((frame.request_id, frame.flags), (0, 0))
        self.assertEqual((frame.message.code, frame.message.ref_request_id), (ErrorCode.MALFORMED, 5))

    def test_malformed_error_is_not_answered(self):
        """A malformed ERROR closes the session without an ERROR in reply."""
        clock, client, server = ready_pair()
        body = b"\x00\x04\x00\x00"  # code, then a ref_request_id cut short
        (failed,) = server.feed(HEADER.pack(CONFIG.magic, 1, m.MessageType.ERROR, 0, 0, len(body)) + body)
        self.assertEqual(failed.error.code, ErrorCode.MALFORMED)
        self.assertEqual(server.state, State.ERROR)
        self.assertEqual(server.data_to_send(), b"")

    def test_oversized_error_is_not_answered(self):
        """An ERROR frame announcing too large a body closes the session silently."""
        clock, client, server = ready_pair()
        (failed,) = server.feed(HEADER.pack(CONFIG.magic, 1, m.MessageType.ERROR, Flag.RESPONSE, 3, 1 << 30))
        self.assertEqual(failed.error.code, ErrorCode.FRAME_TOO_LARGE)
        self.assertEqual(server.data_to_send(), b"")

    def test_error_with_unknown_critical_tlv_is_ignored(self):
        """An ERROR with an unknown critical TLV is not acted on and not answered; the session goes on."""
        clock, client, server = ready_pair()
        request_id, data = client.request(m.GetAddr())
        error = m.Error(code=ErrorCode.BUSY, ref_request_id=request_id, text="", ext=(m.Tlv(0x8000 | 0x7ABC, b""),))
        (event,) = client.feed(encode_frame(CONFIG.magic, error, request_id, Flag.RESPONSE))
        self.assertIsInstance(event, Misbehaved)
        self.assertEqual(event.error.code, ErrorCode.UNSUPPORTED)
        self.assertEqual(client.data_to_send(), b"")
        self.assertEqual(client.pending_requests, 1)  # not acted on: the request is still outstanding
        self.assertEqual(client.state, State.READY)

    def test_unmatched_error_is_not_answered(self):
        """An ERROR answering no request of ours is reported, never answered."""
        clock, client, server = ready_pair()
        error = m.Error(code=ErrorCode.BUSY, ref_request_id=4242, text="?")
        (event,) = client.feed(encode_frame(CONFIG.magic, error, 4242, Flag.RESPONSE))
        self.assertEqual(event, ErrorReceived(ErrorCode.BUSY, "?", 4242))
        self.assertEqual(client.data_to_send(), b"")

    def test_close_sends_the_given_code(self):
        """A refusal after READY (say a discouraged remote) sends ERROR with that code before closing."""
        clock, client, server = ready_pair()
        server.close("discouraged", ErrorCode.DENIED)
        self.assertEqual(server.state, State.CLOSING)
        (event,) = client.feed(server.data_to_send())
        self.assertEqual(event, ErrorReceived(ErrorCode.DENIED, "discouraged", 0))
        server.close()
        self.assertEqual(server.data_to_send(), b"")  # one ERROR per close

    def test_one_closing_error_per_session(self):
        """A fatal error after we sent our closing ERROR ends the session without a second ERROR."""
        clock, client, server = ready_pair()
        server.close()
        server.data_to_send()
        (failed,) = server.feed(HEADER.pack(CONFIG.magic, 1, m.MessageType.PING, 0, 1, 3) + b"abc")
        self.assertEqual(failed.error.code, ErrorCode.MALFORMED)
        self.assertEqual(server.state, State.ERROR)
        self.assertEqual(server.data_to_send(), b"")

    def test_close_during_handshake_sends_error(self):
        """Closing before READY still tells the remote why."""
        clock, client, server = make_pair()
        server.close("too many inbound connections", ErrorCode.BUSY)
        self.assertEqual([e.code for e in sent_errors(server)], [ErrorCode.BUSY])

    def test_abort_sends_error(self):
        """A fatal error found outside the codec (by TLS) is sent as ERROR(code) before the close."""
        from orb.protocol.errors import IdentityMismatch

        clock, client, server = make_pair()
        (failed,) = server.abort(IdentityMismatch("the TLS certificate holds no Ed25519 key"))
        self.assertIsInstance(failed, SessionFailed)
        self.assertEqual([e.code for e in sent_errors(server)], [ErrorCode.IDENTITY])
        self.assertEqual(server.abort(IdentityMismatch("again")), [])


class UnservedTypeTests(SynchronousTestCase):
    def test_unserved_request_gets_unsupported(self):
        """A v1 type the node does not serve gets ERROR(unsupported), not unexpected; the session goes on."""
        served = {m.MessageType.GETADDR, m.MessageType.ADDR}
        clock, client, server = ready_pair(server_kw={"config": attrs.evolve(CONFIG, served_types=served)})
        request_id, data = client.request(m.Lookup(fid=b"\x01" * 33, max_replicas=1))
        (event,) = server.feed(data)
        self.assertIsInstance(event, Misbehaved)
        self.assertEqual(event.error.code, ErrorCode.UNSUPPORTED)
        (event,) = client.feed(server.data_to_send())
        self.assertEqual((event.code, event.ref_request_id), (ErrorCode.UNSUPPORTED, request_id))
        self.assertEqual(client.pending_requests, 0)
        self.assertEqual(server.state, State.READY)
        request_id, data = client.request(m.GetAddr())
        self.assertIsInstance(server.feed(data)[0], MessageReceived)

    def test_unserved_requests_do_not_use_up_the_in_flight_limit(self):
        """Refused unserved requests are answered at once, so they never count as in flight."""
        config = attrs.evolve(CONFIG, served_types=(), max_inflight_requests=1)
        clock, client, server = ready_pair(server_kw={"config": config})
        for rid in range(1, 11):
            (event,) = server.feed(encode_frame(CONFIG.magic, m.Lookup(fid=b"\x01", max_replicas=1), rid))
            self.assertEqual(event.error.code, ErrorCode.UNSUPPORTED)

    def test_ping_and_responses_are_always_handled(self):
        """PING is answered and responses are matched even when the node serves no type."""
        clock, client, server = ready_pair(server_kw={"config": attrs.evolve(CONFIG, served_types=())})
        self.assertEqual(server.feed(client.ping()), [])
        (rtt,) = client.feed(server.data_to_send())
        self.assertIsInstance(rtt, RttMeasured)
        request_id, data = server.request(m.GetAddr())
        client.feed(data)
        (answer,) = server.feed(client.send(m.Addr(entries=()), response_to=request_id))
        self.assertTrue(answer.is_response)


class ErrorPropertyTests(SynchronousTestCase):
    @settings(max_examples=300, deadline=None, derandomize=True)
    @given(
        st.binary(max_size=80),
        st.integers(0, 0xFFFF),
        st.integers(0, 0xFFFFFFFF),
        st.sampled_from([True, False]),
    )
    def test_no_error_is_ever_sent_about_an_error(self, body, flags, request_id, ready):
        """Whatever an ERROR frame holds, before or after READY, nothing is sent back about it."""
        clock, client, server = make_pair()
        hello = client.data_to_send()
        if ready:
            server.feed(hello)
            server.data_to_send()
        server.feed(HEADER.pack(CONFIG.magic, 1, m.MessageType.ERROR, flags, request_id, len(body)) + body)
        self.assertEqual(server.data_to_send(), b"")

    @settings(max_examples=300, deadline=None, derandomize=True)
    @given(st.integers(1, 0xFF), st.binary(max_size=40), st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF))
    def test_an_error_only_names_requests_of_the_remote(self, message_type, body, flags, request_id):
        """An ERROR refers to a request id only when the offending frame was a request (no RESPONSE flag)."""
        clock, client, server = ready_pair()
        server.feed(HEADER.pack(CONFIG.magic, 1, message_type, flags, request_id, len(body)) + body)
        for frame in decode_all(server, server.data_to_send()):
            if not isinstance(frame.message, m.Error):
                continue  # a PONG
            ref = frame.message.ref_request_id
            if flags & Flag.RESPONSE or request_id == 0:
                self.assertEqual((ref, frame.request_id, frame.flags), (0, 0, 0))
            else:
                self.assertEqual(ref, request_id)
                self.assertEqual(frame.request_id, ref if frame.flags & Flag.RESPONSE else 0)
