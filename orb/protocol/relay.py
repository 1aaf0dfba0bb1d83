# -*- test-case-name: tests.test_relay -*-
"""
The inner frame of RELAY (RFC 10.3), with no I/O: what a tracker checks
before it forwards one, and what an end of the relayed conversation
decodes and encodes.

A relay reads the inner frame's header only (``inner_header``): the magic,
a length that matches the bytes exactly and is within the frame limit,
and a type that is not HELLO, HELLO_ACK or RELAY. An end decodes the whole
frame (``decode_inner``), strictly: exactly one frame, no bytes left over.
Both raise only ``BadInnerFrame``, whose ``code`` is the ERROR code the
RFC gives for it.
"""

import attrs

from orb.protocol.codes import ErrorCode
from orb.protocol.errors import ProtocolError
from orb.protocol.frame import HEADER, HEADER_SIZE, Flag, FrameDecoder, encode_frame
from orb.protocol.messages import MessageType

# Never inside RELAY: a handshake belongs to a TLS session, and relays do not nest.
NOT_RELAYED = frozenset({MessageType.HELLO, MessageType.HELLO_ACK, MessageType.RELAY})


class BadInnerFrame(Exception):
    """The inner frame of a RELAY is not acceptable; ``code`` is the ERROR code that says why."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


@attrs.frozen
class InnerHeader:
    """The header of a checked inner frame."""

    version: int
    type: int
    flags: int
    request_id: int

    @property
    def is_response(self):
        return bool(self.flags & Flag.RESPONSE)

    @property
    def is_answer(self):
        """A response or an ERROR: it ends a request of the frame's receiver, and is never answered."""
        return self.is_response or self.type == MessageType.ERROR

    @property
    def is_request(self):
        """A request of the frame's sender: it expects an answer with this id."""
        return bool(self.request_id) and not self.is_response and self.type != MessageType.ERROR


def inner_header(frame, magic, max_frame_bytes):
    """The header of ``frame`` once it passes a relay's checks; raises BadInnerFrame."""
    if len(frame) < HEADER_SIZE:
        raise BadInnerFrame(ErrorCode.MALFORMED, f"the inner frame is {len(frame)} bytes, shorter than a header")
    got_magic, version, message_type, flags, request_id, length = HEADER.unpack_from(frame)
    if got_magic != magic:
        raise BadInnerFrame(ErrorCode.MALFORMED, f"the inner frame has magic {bytes(got_magic).hex()}, not this network's")
    if length != len(frame) - HEADER_SIZE:
        raise BadInnerFrame(ErrorCode.MALFORMED,
                            f"the inner header announces {length} body bytes, the frame holds {len(frame) - HEADER_SIZE}")
    if length > max_frame_bytes:
        raise BadInnerFrame(ErrorCode.FRAME_TOO_LARGE, f"the inner body of {length} bytes is over {max_frame_bytes}")
    if message_type in NOT_RELAYED:
        raise BadInnerFrame(ErrorCode.UNEXPECTED, f"{MessageType(message_type).name} is never relayed")
    return InnerHeader(version, message_type, flags, request_id)


def decode_inner(frame, magic, max_frame_bytes):
    """The inner frame decoded in full: a Frame whose message is known and valid; raises BadInnerFrame."""
    inner_header(frame, magic, max_frame_bytes)
    decoder = FrameDecoder(magic, max_frame_bytes)
    try:
        items = decoder.feed(frame)
    except ProtocolError as e:
        raise BadInnerFrame(e.code, e.message) from None
    if len(items) != 1 or decoder.buffered_bytes:
        raise BadInnerFrame(ErrorCode.MALFORMED, "the inner bytes are not exactly one frame")
    item = items[0]
    if isinstance(item, ProtocolError):
        raise BadInnerFrame(item.code, item.message)
    return item


def encode_inner(magic, message, request_id=0, response=False):
    """An inner frame: a request (``request_id``), a response to one (``response``), or a notification."""
    return encode_frame(magic, message, request_id, int(Flag.RESPONSE) if response else 0)
