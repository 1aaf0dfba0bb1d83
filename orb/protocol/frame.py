# -*- test-case-name: tests.test_codec -*-
"""
Framing: a fixed 16-byte header, then the body.

    magic(4) version(1) type(1) flags(2) request_id(4) length(4)

All integers are big-endian. The length is checked against the
receiver's limit as soon as the header is complete, before any of the
body is buffered.
"""

import enum
import functools
import hashlib
import struct

import attrs

from orb.protocol.errors import FrameTooLarge, ProtocolError, VersionMismatch, WrongNetwork
from orb.protocol.messages import MessageType, Ping, Pong, decode_body

HEADER = struct.Struct(">4sBBHII")
HEADER_SIZE = HEADER.size  # 16

DEFAULT_MAX_FRAME_BYTES = 4 * 1024 * 1024  # body bytes
PROTOCOL_VERSIONS = (1,)  # the versions this implementation speaks
BASE_VERSION = 1  # HELLO and HELLO_ACK always travel in version-1 frames


class Flag(enum.IntFlag):
    RESPONSE = 0x0001  # the frame answers the request with the same id


KNOWN_FLAGS = int(Flag.RESPONSE)
_RESPONSE = int(Flag.RESPONSE)  # a plain int: IntFlag arithmetic is slow on a path taken per frame

# PING and PONG are most of the frames a live session carries (keepalives, RTT):
# with no extension TLVs their body is the 8-byte nonce alone, and that one case is
# packed and unpacked here with struct rather than through construct (the same
# bytes; tests.test_codec checks the two paths agree). Any other body of theirs
# goes through the messages' declarations as usual.
_NONCE = struct.Struct(">Q")
_NONCE_MESSAGES = {int(MessageType.PING): Ping, int(MessageType.PONG): Pong}


@functools.lru_cache(maxsize=64)
def network_magic(network):
    """The 4-byte magic of a network: SHA-256("orb-network:" + name)[:4]."""
    return hashlib.sha256(b"orb-network:" + network.encode("utf-8")).digest()[:4]


@attrs.frozen
class Frame:
    """A decoded frame: its header fields and its message."""

    version: int
    flags: int
    request_id: int
    message: object
    size: int = attrs.field(default=0, eq=False)  # header + body bytes on the wire

    @property
    def is_response(self):
        return bool(self.flags & _RESPONSE)


def encode_frame(magic, message, request_id=0, flags=0, version=BASE_VERSION):
    if message.TYPE in _NONCE_MESSAGES and not message.ext:
        return HEADER.pack(magic, version, message.TYPE, flags, request_id, _NONCE.size) + _NONCE.pack(message.nonce)
    body = message.encode_body()
    return HEADER.pack(magic, version, message.TYPE, flags, request_id, len(body)) + body


def _decode_body(message_type, body):
    """decode_body, with the bare PING/PONG body (a nonce, no TLVs) unpacked directly."""
    if len(body) == _NONCE.size:
        cls = _NONCE_MESSAGES.get(message_type)
        if cls is not None:
            return cls(nonce=_NONCE.unpack(body)[0])
    return decode_body(message_type, body)


@functools.lru_cache(maxsize=16)
def _version_set(versions):
    """One frozenset per list of versions, shared by every decoder (an empty one is 216 bytes)."""
    return frozenset(versions)


class FrameDecoder:
    """
    Incremental frame decoder: feed it bytes, get back complete frames.

    Raises only ProtocolError subclasses. After one is raised the decoder
    is poisoned: the caller must close the connection.
    """

    def __init__(self, magic, max_frame_bytes=DEFAULT_MAX_FRAME_BYTES, versions=PROTOCOL_VERSIONS):
        self.magic = magic
        self.max_frame_bytes = max_frame_bytes
        self.versions = _version_set(tuple(versions))
        self._buffer = bytearray()
        self._header = None  # the parsed header of the frame being buffered

    @property
    def buffered_bytes(self):
        return len(self._buffer)

    def feed(self, data):
        """
        Return what ``data`` completes, in order: Frame objects, and the
        non-fatal ProtocolErrors (an unknown message type, say) in place of
        the frames that caused them. Fatal errors are raised.
        """
        self._buffer += data
        frames = []
        while True:
            if self._header is None:
                if len(self._buffer) < HEADER_SIZE:
                    return frames
                self._header = self._check_header(HEADER.unpack_from(self._buffer))
            magic, version, message_type, flags, request_id, length = self._header
            if len(self._buffer) < HEADER_SIZE + length:
                return frames
            body = bytes(memoryview(self._buffer)[HEADER_SIZE : HEADER_SIZE + length])
            del self._buffer[: HEADER_SIZE + length]
            self._header = None
            try:
                message = _decode_body(message_type, body)
            except ProtocolError as e:
                e.about_frame(message_type, flags, request_id)
                if e.fatal:
                    raise
                frames.append(e)  # e.g. an unknown type: the stream goes on
                continue
            frames.append(Frame(version, flags, request_id, message, HEADER_SIZE + length))

    def _check_header(self, header):
        magic, version, message_type, flags, request_id, length = header
        if magic != self.magic:
            raise WrongNetwork(f"bad magic {bytes(magic).hex()}, expected {self.magic.hex()}")
        if length > self.max_frame_bytes:
            raise FrameTooLarge(
                f"frame body of {length} bytes exceeds the limit of {self.max_frame_bytes}"
            ).about_frame(message_type, flags, request_id)
        if version not in self.versions:
            raise VersionMismatch(
                f"frame version {version} is not one of {sorted(self.versions)}"
            ).about_frame(message_type, flags, request_id)
        return header
