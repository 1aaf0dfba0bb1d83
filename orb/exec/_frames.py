# -*- test-case-name: tests.test_exec_frames -*-
"""
The executor's private framing between the peer and its zygote, and between
the zygote and its warm workers.  It is not the ORB wire protocol.

A frame is a fixed header, a JSON control object and a raw payload::

    HEADER = struct ">II"   ctl_len, data_len (big-endian, unsigned)
    ctl_len bytes           UTF-8 JSON object, e.g. {"op": "run", "id": 7, ...}
    data_len bytes          payload (function input, or output + log)

Lengths are checked against the decoder's limits before anything is
buffered, so a frame that is too large is refused at its header.
"""

import json
import struct

HEADER = struct.Struct(">II")
MAX_CTL_BYTES = 64 * 1024


class FrameError(Exception):
    """The other side sent bytes that are not a valid frame."""


class FrameTooLarge(FrameError):
    """A frame header announced more bytes than the limit allows."""


class ControlTooLarge(FrameTooLarge):
    """The control object is over its limit: garbage rather than a big payload."""


def encode(ctl: dict, data: bytes = b"") -> bytes:
    body = json.dumps(ctl, separators=(",", ":")).encode()
    if len(body) > MAX_CTL_BYTES:
        raise ValueError("control object too large")
    return HEADER.pack(len(body), len(data)) + body + data


class FrameDecoder:
    """Bytes in, ``(ctl, data)`` pairs out.  Raises only :class:`FrameError`."""

    def __init__(self, max_data_bytes: int, max_ctl_bytes: int = MAX_CTL_BYTES):
        self.max_data_bytes = max_data_bytes
        self.max_ctl_bytes = max_ctl_bytes
        self._buf = bytearray()
        self._need: tuple[int, int] | None = None
        self._failed = False

    def feed(self, data: bytes) -> list[tuple[dict, bytes]]:
        if self._failed:
            raise FrameError("decoder already failed")
        self._buf += data
        out = []
        try:
            while True:
                if self._need is None:
                    if len(self._buf) < HEADER.size:
                        break
                    ctl_len, data_len = HEADER.unpack_from(self._buf)
                    if ctl_len > self.max_ctl_bytes:
                        raise ControlTooLarge(f"control object of {ctl_len} bytes is over the limit")
                    if data_len > self.max_data_bytes:
                        raise FrameTooLarge(f"payload of {data_len} bytes is over the limit")
                    del self._buf[: HEADER.size]
                    self._need = (ctl_len, data_len)
                ctl_len, data_len = self._need
                if len(self._buf) < ctl_len + data_len:
                    break
                raw_ctl = bytes(self._buf[:ctl_len])
                payload = bytes(self._buf[ctl_len : ctl_len + data_len])
                del self._buf[: ctl_len + data_len]
                self._need = None
                try:
                    ctl = json.loads(raw_ctl)
                except (ValueError, UnicodeDecodeError) as e:
                    raise FrameError(f"control object is not JSON: {e}") from None
                if not isinstance(ctl, dict):
                    raise FrameError("control object is not a JSON object")
                out.append((ctl, payload))
        except FrameError:
            self._failed = True
            raise
        return out

    def pending_bytes(self) -> int:
        return len(self._buf)
