# -*- test-case-name: tests.test_limits -*-
"""
Log hygiene for what remotes say and do.

- ``escape(text)``: remote text (ERROR texts, reasons, bytes) is made safe
  to print: control characters, bidirectional overrides and other
  invisible format characters become escapes, and it is cut to a bound.
- ``orb_logger()``: the Logger every daemon module uses. Its events pass a
  level filter first, info by default, so ORB's debug lines cost nothing
  unless an operator asks for them (``set_level``).
- ``RemoteLogLimit``: lines caused by one remote are rate-limited per remote.
"""

import unicodedata

from twisted.logger import (
    FilteringLogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogPublisher,
)

from orb.net.limits import TokenBuckets

MAX_LOGGED_CHARS = 200
LOG_LINES_PER_REMOTE_PER_S = 1.0
LOG_LINES_PER_REMOTE_BURST = 10

_levels = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)


def set_level(level):
    """The lowest level ORB's loggers emit (LogLevel.debug, .info, ...)."""
    _levels.setLogLevelForNamespace(None, level)


def orb_logger():
    """A Logger for the calling module, filtered to the ORB log level."""
    import inspect

    namespace = inspect.currentframe().f_back.f_globals.get("__name__", "orb")
    return Logger(namespace, observer=FilteringLogObserver(globalLogPublisher, [_levels]))


def escape(text, limit=MAX_LOGGED_CHARS):
    """Remote text, printable and bounded: safe to put in a log line."""
    if isinstance(text, (bytes, bytearray, memoryview)):
        return repr(bytes(text[:limit]))
    text = str(text)
    out = []
    for ch in text[:limit]:
        if ch.isprintable() and unicodedata.category(ch) not in ("Cf", "Co", "Cs"):
            out.append(ch)
        elif ch in "\n\r\t":
            out.append(repr(ch)[1:-1])
        else:
            out.append(f"\\u{ord(ch):04x}" if ord(ch) < 0x10000 else f"\\U{ord(ch):08x}")
    if len(text) > limit:
        out.append("…")
    return "".join(out)


class RemoteLogLimit:
    """``allow(remote)``: whether one more line caused by ``remote`` may be logged."""

    def __init__(self, clock, rate_per_s=LOG_LINES_PER_REMOTE_PER_S, burst=LOG_LINES_PER_REMOTE_BURST):
        self._buckets = TokenBuckets(clock, rate_per_s, burst)

    def allow(self, remote):
        return self._buckets.allow(remote)
