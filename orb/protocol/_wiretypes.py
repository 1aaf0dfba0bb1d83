# -*- test-case-name: tests.test_codec -*-
"""
Byte-string field types that refuse short reads, in both construct's
interpreted and compiled modes.

construct 2.10 compiles ``Bytes(n)`` and ``Prefixed(..., GreedyBytes)`` to
a bare ``io.read(n)``, which returns fewer bytes at the end of the input
without complaint, so a truncated body would decode. These replacements
raise instead, and read the payload with a single copy (no restream).
"""

import struct

from construct import Construct, FormatField, SizeofError, StreamError, stream_read, stream_write

_READ_EXACT = """
def read_exact(io, n):
    data = io.read(n)
    if len(data) != n:
        raise StreamError("short read: wanted %d bytes, got %d" % (n, len(data)))
    return data
"""

_BAD_LENGTH = """
def bad_length(obj, n):
    raise StreamError("expected %d bytes, got %d" % (n, len(obj)))
"""

_FORMATS = {1: ">B", 2: ">H", 4: ">I"}


class FixedBytes(Construct):
    """Exactly ``length`` bytes."""

    def __init__(self, length):
        super().__init__()
        self.length = length

    def _parse(self, stream, context, path):
        return stream_read(stream, self.length, path)

    def _build(self, obj, stream, context, path):
        if not isinstance(obj, bytes) or len(obj) != self.length:
            raise StreamError(f"expected {self.length} bytes", path=path)
        stream_write(stream, obj, self.length, path)
        return obj

    def _sizeof(self, context, path):
        return self.length

    def _emitparse(self, code):
        code.append(_READ_EXACT)
        return f"read_exact(io, {self.length})"

    def _emitbuild(self, code):
        code.append(_BAD_LENGTH)
        return f"(io.write(obj), obj)[1] if len(obj) == {self.length} else bad_length(obj, {self.length})"


class PrefixedBytes(Construct):
    """An unsigned big-endian length of ``width`` bytes, then that many bytes."""

    def __init__(self, width):
        super().__init__()
        self.width = width
        self.format = struct.Struct(_FORMATS[width])
        self.max_length = (1 << (8 * width)) - 1

    def _parse(self, stream, context, path):
        (length,) = self.format.unpack(stream_read(stream, self.width, path))
        return stream_read(stream, length, path)

    def _build(self, obj, stream, context, path):
        if len(obj) > self.max_length:
            raise StreamError(f"{len(obj)} bytes do not fit a {self.width}-byte length", path=path)
        stream_write(stream, self.format.pack(len(obj)), self.width, path)
        stream_write(stream, obj, len(obj), path)
        return obj

    def _sizeof(self, context, path):
        raise SizeofError("variable length", path=path)

    def _emitparse(self, code):
        code.append(_READ_EXACT)
        fmt = f"prefix_{self.width}"
        code.append(f"{fmt} = struct.Struct('{_FORMATS[self.width]}')")
        return f"read_exact(io, {fmt}.unpack(read_exact(io, {self.width}))[0])"

    def _emitbuild(self, code):
        fmt = f"prefix_{self.width}"
        code.append(f"{fmt} = struct.Struct('{_FORMATS[self.width]}')")
        return f"(io.write({fmt}.pack(len(obj))), io.write(obj), obj)[2]"


class PrefixedText(PrefixedBytes):
    """PrefixedBytes holding UTF-8 text."""

    def _parse(self, stream, context, path):
        return super()._parse(stream, context, path).decode("utf-8")

    def _build(self, obj, stream, context, path):
        super()._build(obj.encode("utf-8"), stream, context, path)
        return obj

    def _emitparse(self, code):
        return f"{super()._emitparse(code)}.decode('utf-8')"

    def _emitbuild(self, code):
        fmt = f"prefix_{self.width}"
        code.append(f"{fmt} = struct.Struct('{_FORMATS[self.width]}')")
        return f"(reuse(obj.encode('utf-8'), lambda data: (io.write({fmt}.pack(len(data))), io.write(data))), obj)[1]"


class Bool8Field(FormatField):
    """
    A boolean: one byte, 0 or 1. It parses as a plain u8 (so the compiled
    parser stays a struct call); the message class's validator makes any
    other value a malformed body. Its own class lets the RFC tables say
    ``bool`` rather than ``u8``.
    """

    def __init__(self):
        super().__init__(">", "B")


Bool8 = Bool8Field()
