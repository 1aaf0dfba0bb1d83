# -*- test-case-name: tests.test_demo -*-
"""
A readable transcript of ORB frames, for the demo and for operators
debugging a session: one line per frame with its decoded fields.
"""

import attrs

from orb.protocol.frame import FrameDecoder, Flag
from orb.protocol.codes import ErrorCode, ResultStatus
from orb.protocol.messages import Endpoint, Error, Result

MAX_VALUE_CHARS = 48


def describe_value(value):
    if isinstance(value, bytes):
        text = value.hex()
        return text if len(text) <= 16 else f"{text[:12]}..({len(value)} B)"
    if isinstance(value, Endpoint):
        return f"{value.host}:{value.port}" if ":" not in value.host else f"[{value.host}]:{value.port}"
    if isinstance(value, tuple):
        if len(value) > 3:
            return f"[{', '.join(describe_value(v) for v in value[:2])}, ... {len(value)} items]"
        return f"[{', '.join(describe_value(v) for v in value)}]"
    if attrs.has(type(value)):
        inner = " ".join(f"{a.name}={describe_value(getattr(value, a.name))}" for a in attrs.fields(type(value)))
        return "{" + inner + "}"
    text = repr(value)
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 3] + "..."


def _enum_name(enum_cls, value):
    try:
        return enum_cls(value).name.lower()
    except ValueError:
        return str(value)


def describe_message(message):
    parts = []
    for a in attrs.fields(type(message)):
        value = getattr(message, a.name)
        if a.name == "ext" and not value:
            continue
        if isinstance(message, Error) and a.name == "code":
            text = _enum_name(ErrorCode, value)
        elif isinstance(message, Result) and a.name == "status":
            text = _enum_name(ResultStatus, value)
        else:
            text = describe_value(value)
        parts.append(f"{a.name}={text}")
    return " ".join(parts)


class Transcript:
    """
    Decodes the raw bytes each side writes and reads, per connection and
    direction, into (connection label, direction, frame, size) rows.
    """

    def __init__(self, magic, sink):
        self.magic = magic
        self.sink = sink
        self._decoders = {}

    def observe(self, label, direction, data):
        decoder = self._decoders.get((label, direction))
        if decoder is None:
            decoder = self._decoders[(label, direction)] = FrameDecoder(self.magic)
        for frame in decoder.feed(data):
            self.sink(label, direction, frame)


def frame_line(frame):
    flags = " response" if frame.flags & Flag.RESPONSE else ""
    message = frame.message
    return f"{message.TYPE.name:<9} id={frame.request_id}{flags}  {describe_message(message)}"
