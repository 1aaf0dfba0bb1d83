"""
The wire codec: golden bytes, round trips, byte-at-a-time feeding,
truncated and oversized frames, and hostile input.
"""

import struct

import attrs
from construct import StreamError, Struct
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from orb.protocol import messages as m
from orb.protocol import spec
from orb.protocol.codes import TLV_CRITICAL, ErrorCode, TlvType
from orb.protocol.errors import (
    DecodeError,
    FrameTooLarge,
    ProtocolError,
    UnsupportedMessage,
    VersionMismatch,
    WrongNetwork,
)
from orb.protocol.frame import HEADER, HEADER_SIZE, Flag, Frame, FrameDecoder, encode_frame, network_magic
from tests.strategies import any_message, message_strategy

MAGIC = network_magic("devnet")


def frames_of(data, **kw):
    return FrameDecoder(MAGIC, **kw).feed(data)


class GoldenBytesTests(SynchronousTestCase):
    def test_ping_frame(self):
        """A PING frame, field by field, as in the RFC's header table."""
        data = encode_frame(MAGIC, m.Ping(nonce=0x0102030405060708), request_id=0x0A0B0C0D)
        self.assertEqual(
            data,
            b"\xd5\x43\xfd\xdc"  # magic: SHA-256("orb-network:devnet")[:4]
            b"\x01"  # version 1
            b"\x03"  # type PING
            b"\x00\x00"  # flags: none
            b"\x0a\x0b\x0c\x0d"  # request id
            b"\x00\x00\x00\x08"  # body length: 8
            b"\x01\x02\x03\x04\x05\x06\x07\x08",  # nonce; empty TLV area
        )

    def test_error_frame(self):
        """An ERROR body, field by field: code, ref_request_id, text<u16>."""
        data = encode_frame(MAGIC, m.Error(code=ErrorCode.MALFORMED, ref_request_id=5, text="bad"), 5, Flag.RESPONSE)
        self.assertEqual(
            data[HEADER_SIZE:],
            b"\x00\x01"  # code: malformed
            b"\x00\x00\x00\x05"  # ref_request_id
            b"\x00\x03bad",  # text<u16>
        )
        self.assertEqual(HEADER.unpack(data[:HEADER_SIZE])[3], Flag.RESPONSE)

    def test_ipv4_is_mapped(self):
        """An IPv4 address travels as an IPv4-mapped IPv6 address."""
        body = m.Endpoint("10.1.2.3", 80).to_wire()
        self.assertEqual(body["ip"], b"\x00" * 10 + b"\xff\xff\x0a\x01\x02\x03")

    def test_main_and_devnet_magics_differ(self):
        """Nodes of different networks have different magics and so never talk."""
        self.assertNotEqual(network_magic("main"), network_magic("devnet"))
        self.assertEqual(len(network_magic("main")), 4)


class RoundTripTests(SynchronousTestCase):
    def test_every_sample_round_trips(self):
        """Every message type decodes to what was encoded, header values included."""
        for name, msg, request_id, flags in spec.sample_messages():
            data = encode_frame(MAGIC, msg, request_id, flags)
            (frame,) = frames_of(data)
            self.assertEqual(frame, Frame(1, flags, request_id, msg), name)
            self.assertEqual(encode_frame(MAGIC, frame.message, request_id, flags), data, name)

    def test_every_type_has_a_sample(self):
        """The sample set, and so the vectors, cover every message type."""
        sampled = {msg.TYPE for _, msg, _, _ in spec.sample_messages()}
        self.assertEqual(sampled, set(m.MESSAGES))

    def test_compiled_matches_interpreted(self):
        """Each compiled struct parses and builds exactly like its interpreted twin."""
        for name, msg, _, _ in spec.sample_messages():
            body = msg.encode_body()
            self.assertEqual(msg.BODY.build(msg.to_wire()), body, name)
            self.assertEqual(type(msg).from_wire(msg.BODY.parse(body)), type(msg).from_wire(msg.COMPILED.parse(body)), name)

    def test_byte_at_a_time(self):
        """A stream fed one byte at a time yields the same frames and leaves nothing buffered."""
        stream = b"".join(encode_frame(MAGIC, msg, rid, fl) for _, msg, rid, fl in spec.sample_messages())
        decoder = FrameDecoder(MAGIC)
        frames = []
        for i in range(len(stream)):
            frames.extend(decoder.feed(stream[i : i + 1]))
        self.assertEqual([f.message for f in frames], [msg for _, msg, _, _ in spec.sample_messages()])
        self.assertEqual(decoder.buffered_bytes, 0)

    def test_unknown_noncritical_tlv_is_kept_and_ignored(self):
        """An unknown non-critical TLV is ignored and kept for re-encoding."""
        msg = m.Ping(nonce=1, ext=(m.Tlv(0x7ABC, b"future"),))
        (frame,) = frames_of(encode_frame(MAGIC, msg))
        self.assertEqual(frame.message.nonce, 1)
        self.assertEqual(frame.message.ext, (m.Tlv(0x7ABC, b"future"),))

    def test_known_critical_tlv_is_accepted(self):
        """A known TLV marked critical is processed like the non-critical form."""
        msg = m.Ping(nonce=1, ext=(m.Tlv(TLV_CRITICAL | TlvType.TRACE_ID, b"x" * 16),))
        self.assertEqual(frames_of(encode_frame(MAGIC, msg))[0].message, msg)

    @settings(max_examples=300, deadline=None)
    @given(any_message, st.integers(0, 0xFFFFFFFF), st.sampled_from([0, 1]))
    def test_decode_encode_property(self, msg, request_id, flags):
        """decode(encode(m)) == m, for every message type."""
        (frame,) = frames_of(encode_frame(MAGIC, msg, request_id, flags))
        self.assertEqual(frame.message, msg)
        self.assertEqual(frame.request_id, request_id)

    @settings(max_examples=5, deadline=None)
    @given(st.data())
    def test_property_covers_every_type(self, data):
        """The round-trip property is exercised for every message class."""
        for cls in m.MESSAGES.values():
            msg = data.draw(message_strategy(cls))
            self.assertEqual(frames_of(encode_frame(MAGIC, msg))[0].message, msg)

    @settings(max_examples=200, deadline=None)
    @given(st.sampled_from([m.Ping, m.Pong]), st.integers(0, 2**64 - 1), st.binary(max_size=12))
    def test_bare_ping_pong_path_agrees_with_the_declarations(self, cls, nonce, tail):
        """PING and PONG packed by struct are the bytes construct builds, and any body decodes as construct does."""
        msg = cls(nonce=nonce)
        self.assertEqual(encode_frame(MAGIC, msg)[HEADER_SIZE:], msg.encode_body())
        body = struct.pack(">Q", nonce)[: len(tail) % 9] + tail  # short, exact and long bodies
        try:
            expected = m.decode_body(cls.TYPE, body)
        except ProtocolError as e:
            expected = type(e)
        frame = HEADER.pack(MAGIC, 1, cls.TYPE, 0, 1, len(body)) + body
        try:
            (got,) = frames_of(frame)
            got = got.message if isinstance(got, Frame) else type(got)
        except ProtocolError as e:
            got = type(e)
        self.assertEqual(got, expected)


class BadInputTests(SynchronousTestCase):
    def test_truncated_frame_waits(self):
        """A partial frame is buffered until the rest arrives, not refused."""
        data = encode_frame(MAGIC, m.Lookup(fid=b"\x01" * 33, max_replicas=3))
        decoder = FrameDecoder(MAGIC)
        self.assertEqual(decoder.feed(data[:5]), [])
        self.assertEqual(decoder.feed(data[5:-1]), [])
        self.assertEqual(len(decoder.feed(data[-1:])), 1)

    def test_oversized_length_refused_from_header(self):
        """Refused as soon as the header is in, before any body byte."""
        header = HEADER.pack(MAGIC, 1, m.MessageType.INVOKE, 0, 3, 5 * 1024 * 1024)
        decoder = FrameDecoder(MAGIC, max_frame_bytes=4 * 1024 * 1024)
        err = self.assertRaises(FrameTooLarge, decoder.feed, header)
        self.assertEqual(err.code, ErrorCode.FRAME_TOO_LARGE)
        self.assertEqual(err.request_id, 3)

    def test_limit_is_a_parameter(self):
        """The frame size limit is the receiver's setting."""
        data = encode_frame(MAGIC, m.Invoke(fid=b"\x01", deadline_ms=1, token=b"", input=b"x" * 100))
        self.assertRaises(FrameTooLarge, frames_of, data, max_frame_bytes=64)
        self.assertEqual(len(frames_of(data, max_frame_bytes=200)), 1)

    def test_wrong_magic(self):
        """A frame of another network is refused as WrongNetwork."""
        data = encode_frame(network_magic("main"), m.Ping(nonce=1))
        self.assertRaises(WrongNetwork, frames_of, data)

    def test_unknown_version(self):
        """A frame version the receiver does not speak is refused with ERROR(version)."""
        data = bytearray(encode_frame(MAGIC, m.Ping(nonce=1)))
        data[4] = 9
        self.assertRaises(VersionMismatch, frames_of, bytes(data))

    def test_short_body(self):
        """A body shorter than its fixed fields is malformed."""
        body = b"\x00\x00\x00\x01"  # 4 of PING's 8 nonce bytes
        data = HEADER.pack(MAGIC, 1, m.MessageType.PING, 0, 0, len(body)) + body
        err = self.assertRaises(DecodeError, frames_of, data)
        self.assertEqual(err.code, ErrorCode.MALFORMED)

    def test_short_fixed_field_at_end(self):
        """A signature one byte short is refused by the parser itself, not only by the validators."""
        _, name, _, _ = [s for s in spec.sample_messages() if s[0] == "name"][0]
        body = name.encode_body()[:-1]
        # construct's own compiled Bytes(64) would return 63 bytes here; FixedBytes must not.
        self.assertRaises(StreamError, m.Name.COMPILED.parse, body)
        self.assertRaises(StreamError, m.Name.BODY.parse, body)
        data = HEADER.pack(MAGIC, 1, m.MessageType.NAME, 0, 0, len(body)) + body
        self.assertRaises(DecodeError, frames_of, data)

    def test_length_prefix_past_end(self):
        """A length prefix running past the end of the body is malformed, even as the last field."""
        body = b"\x00\x00\x00\x64" + b"{}" * 5  # SYNC digest announces 100 bytes, 10 follow
        # Without the exact read the 10 bytes would make a valid digest and an empty TLV area.
        self.assertRaises(StreamError, m.Sync.COMPILED.parse, body)
        data = HEADER.pack(MAGIC, 1, m.MessageType.SYNC, 0, 0, len(body)) + body
        self.assertRaises(DecodeError, frames_of, data)

    def test_bad_utf8(self):
        """Text that is not UTF-8 makes the body malformed."""
        body = struct.pack(">HI", 1, 0) + b"\x00\x02\xff\xfe"
        data = HEADER.pack(MAGIC, 1, m.MessageType.ERROR, 0, 0, len(body)) + body
        self.assertRaises(DecodeError, frames_of, data)

    def test_partial_tlv(self):
        """A TLV header cut short makes the body malformed."""
        body = m.Ping(nonce=1).encode_body() + b"\x00\x01\x00"
        data = HEADER.pack(MAGIC, 1, m.MessageType.PING, 0, 0, len(body)) + body
        self.assertRaises(DecodeError, frames_of, data)

    def test_tlv_longer_than_body(self):
        """A TLV value running past the body makes it malformed."""
        body = m.Ping(nonce=1).encode_body() + b"\x00\x01\x00\x09abc"
        data = HEADER.pack(MAGIC, 1, m.MessageType.PING, 0, 0, len(body)) + body
        self.assertRaises(DecodeError, frames_of, data)

    def test_too_many_addr_entries(self):
        """An ADDR with 1001 entries is malformed."""
        entry = m.AddrEntry(1, "1.2.3.4", 1, 1, b"\x00" * 32).to_wire()
        body = Struct("entries" / m.PrefixedArray(m.Int16ub, m.AddrEntryStruct)).build({"entries": [entry] * 1001})
        data = HEADER.pack(MAGIC, 1, m.MessageType.ADDR, 0, 0, len(body)) + body
        err = self.assertRaises(DecodeError, frames_of, data)
        self.assertIn("1001", str(err))

    def test_unknown_type_is_reported_and_stream_goes_on(self):
        """An unknown type is reported with its request id and the next frame still decodes."""
        data = (
            HEADER.pack(MAGIC, 1, 0x99, 0, 4, 3)
            + b"abc"
            + encode_frame(MAGIC, m.Ping(nonce=2), 5)
        )
        unknown, ping = frames_of(data)
        self.assertIsInstance(unknown, UnsupportedMessage)
        self.assertEqual(unknown.request_id, 4)
        self.assertEqual(ping.message, m.Ping(nonce=2))

    def test_unknown_critical_tlv(self):
        """An unknown critical TLV makes the message unsupported, not malformed."""
        msg = m.Ping(nonce=1, ext=(m.Tlv(TLV_CRITICAL | 0x7ABC, b""),))
        (err,) = frames_of(encode_frame(MAGIC, msg, 6))
        self.assertIsInstance(err, UnsupportedMessage)
        self.assertIn("critical", err.message)

    def test_encoder_refuses_invalid_fields(self):
        """A message that would break a field limit cannot even be built."""
        self.assertRaises(ValueError, m.Ping, nonce=-1)
        self.assertRaises(ValueError, m.Proof, fid=b"\x01", digest=b"short")
        self.assertRaises(ValueError, m.Endpoint, "not-an-ip", 1)
        self.assertRaises(ValueError, m.Addr, entries=[m.AddrEntry(1, "1.2.3.4", 1, 1, b"\x00" * 32)] * 1001)

    @settings(max_examples=500, deadline=None)
    @given(st.sampled_from(sorted(m.MESSAGES) + [0x00, 0x7F, 0xFF]), st.binary(max_size=300))
    def test_arbitrary_bodies_raise_only_protocol_errors(self, message_type, body):
        """Any body of any type gives a frame or a ProtocolError, never a crash."""
        data = HEADER.pack(MAGIC, 1, message_type, 0, 1, len(body)) + body
        try:
            frames_of(data)
        except ProtocolError:
            pass

    @settings(max_examples=500, deadline=None)
    @given(st.binary(max_size=400))
    def test_arbitrary_streams_raise_only_protocol_errors(self, data):
        """Any byte stream after a valid magic gives frames or a ProtocolError, never a crash."""
        try:
            frames_of(MAGIC + data)
        except ProtocolError:
            pass

    @settings(max_examples=500, deadline=None)
    @given(st.data())
    def test_mutated_vectors_raise_only_protocol_errors(self, data):
        """Corrupted and cut vectors decode to their type or raise a ProtocolError, never a crash."""
        samples = spec.sample_messages()
        _, msg, rid, flags = data.draw(st.sampled_from(samples))
        frame = bytearray(encode_frame(MAGIC, msg, rid, flags))
        for _ in range(data.draw(st.integers(1, 4))):
            position = data.draw(st.integers(HEADER_SIZE, len(frame) - 1)) if len(frame) > HEADER_SIZE else 0
            frame[position] = data.draw(st.integers(0, 255))
        cut = data.draw(st.integers(HEADER_SIZE, len(frame)))
        body = bytes(frame[HEADER_SIZE:cut])
        mutated = HEADER.pack(MAGIC, 1, msg.TYPE, flags, rid, len(body)) + body
        try:
            (result,) = frames_of(mutated)
        except ProtocolError:
            return
        if isinstance(result, Frame):
            self.assertIsInstance(result.message, type(msg))
            self.assertTrue(attrs.has(type(result.message)))


def _body_with(msg, name, value):
    """The body of ``msg`` with one field's wire value replaced, built without the validators."""
    wire = msg.to_wire()
    wire[name] = value
    return msg.BODY.build(wire)


class LimitTests(SynchronousTestCase):
    """The Limit column of the RFC layout tables is what the decoder enforces."""

    def test_every_limit_in_the_tables_is_enforced(self):
        """A count or length one past (or one short of) a table limit is a malformed body."""
        import re

        checked = 0
        for _, msg, _, _ in spec.sample_messages():
            cls = type(msg)
            for sub in cls.BODY.subcons:
                limit = spec.field_limit(cls, sub.name) if sub.name != "ext" else ""
                found = re.fullmatch(r"(?:at most (\d+)|(\d+)\.\.(\d+)) (bytes|records|items)", limit)
                if not found:
                    continue
                low = int(found.group(2) or 0)
                high = int(found.group(1) or found.group(3))
                current = msg.to_wire()[sub.name]
                for size in {high + 1, low - 1} - {-1}:
                    if isinstance(current, str):
                        value = "x" * size
                    elif isinstance(current, bytes):
                        value = b"\x01" * size
                    else:
                        value = (list(current) * (size + 1))[:size]
                    try:
                        body = _body_with(msg, sub.name, value)
                    except Exception:
                        continue  # the prefix itself cannot express it (a u8 count of 256)
                    data = HEADER.pack(MAGIC, 1, cls.TYPE, 0, 0, len(body)) + body
                    self.assertRaises(DecodeError, frames_of, data)
                    checked += 1
        self.assertGreaterEqual(checked, 12)

    def test_load_above_1000_is_read_as_1000(self):
        """A Replica load_permille above 1000 is valid and read as 1000, as the table says."""
        replica = m.Replica(b"\x00" * 32, "10.0.0.1", 1, 1, 1, 1, 60000)
        self.assertEqual(replica.load_permille, 1000)

    def test_announce_load_above_1000_is_malformed(self):
        """An ANNOUNCE is a signed statement, so nothing in it is clamped: a load_permille of 1500 does not decode."""
        _, announce, _, _ = next(v for v in spec.sample_messages() if v[0] == "announce")
        body = _body_with(announce, "load_permille", 1500)
        self.assertRaises(DecodeError, frames_of, HEADER.pack(MAGIC, 1, m.MessageType.ANNOUNCE, 0, 0, len(body)) + body)

    def test_empty_versions_list_is_malformed(self):
        """A HELLO that lists no protocol version does not decode."""
        _, hello, _, _ = spec.sample_messages()[0]
        body = _body_with(hello, "versions", [])
        self.assertRaises(DecodeError, frames_of, HEADER.pack(MAGIC, 1, m.MessageType.HELLO, 0, 0, len(body)) + body)

    def test_boolean_other_than_0_or_1_is_malformed(self):
        """A NAME whose `deprecated` byte is 2 does not decode."""
        (name,) = [msg for label, msg, _, _ in spec.sample_messages() if label == "name"]
        body = _body_with(name, "deprecated", 2)
        self.assertRaises(DecodeError, frames_of, HEADER.pack(MAGIC, 1, m.MessageType.NAME, 0, 0, len(body)) + body)

    def test_unknown_delta_kind_is_malformed(self):
        """A DELTA of a kind other than 0 or 1 does not decode."""
        body = b"\x02" + b"\x00\x00\x00\x02{}"
        self.assertRaises(DecodeError, frames_of, HEADER.pack(MAGIC, 1, m.MessageType.DELTA, 0, 0, len(body)) + body)

    def test_unknown_enumeration_values_are_read_as_the_table_says(self):
        """An unknown RESULT status reads as internal, an unknown code as unspecified, reachability as unknown."""
        from orb.protocol.codes import ResultStatus

        result = m.Result(status=200, queue_us=0, fetch_us=0, boot_us=0, exec_us=0, output=b"", log=b"")
        (frame,) = frames_of(encode_frame(MAGIC, result, 1, Flag.RESPONSE))
        self.assertEqual(frame.message.status, 200)  # decoded as sent, so it can be logged
        self.assertEqual(frame.message.status_kind, ResultStatus.INTERNAL)
        self.assertEqual(m.Result(status=0, queue_us=0, fetch_us=0, boot_us=0, exec_us=0, output=b"", log=b"")
                         .status_kind, ResultStatus.OK)
        self.assertEqual(m.Error(code=0xF123, ref_request_id=0, text="").code_kind, ErrorCode.UNSPECIFIED)
        self.assertEqual(m.Replica(b"\x00" * 32, "::1", 1, 1, 9, 0, 0).reachability_kind, m.Reachability.UNKNOWN)


class DedupeAddrTests(SynchronousTestCase):
    def entry(self, ts, host="10.0.0.1", port=7400, node=b"\x01"):
        return m.AddrEntry(ts, host, port, 1, node * 32)

    def test_each_pair_once_newest_wins(self):
        """An ADDR answer lists each (node id, address) pair once, with its newest timestamp."""
        entries = [self.entry(5), self.entry(9, host="10.0.0.2"), self.entry(7), self.entry(6)]
        self.assertEqual(m.dedupe_addr_entries(entries), (self.entry(7), self.entry(9, host="10.0.0.2")))

    def test_mapped_ipv4_is_the_same_address(self):
        """10.0.0.1 and ::ffff:10.0.0.1 are one address."""
        entries = [self.entry(1), self.entry(2, host="::ffff:10.0.0.1")]
        (kept,) = m.dedupe_addr_entries(entries)
        self.assertEqual(kept.timestamp, 2)

    def test_other_node_or_port_is_another_pair(self):
        """The same address under two node ids, or two ports, are distinct entries."""
        entries = [self.entry(1), self.entry(1, node=b"\x02"), self.entry(1, port=7401)]
        self.assertEqual(len(m.dedupe_addr_entries(entries)), 3)

    def test_capped_at_the_addr_limit(self):
        """Deduplicated answers still hold at most 1000 entries."""
        entries = [self.entry(1, port=p) for p in range(1, 1200)]
        self.assertEqual(len(m.dedupe_addr_entries(entries)), m.MAX_ADDR_ENTRIES)
