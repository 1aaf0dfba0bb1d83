# -*- test-case-name: tests.test_codec -*-
"""
Registries shared by the wire protocol and the components that fill it.

Every number here is on the wire and listed in docs/rfc-orb.md; a new
value is allocated by appending, never by reusing a retired one.
"""

import enum


class ResultStatus(enum.IntEnum):
    """RESULT.status: how an invocation ended."""

    OK = 0
    ERROR = 1  # the function ran and failed (exit != 0, exception); log attached
    TIMEOUT = 2  # the wall-clock deadline (or CPU limit) was reached
    MEMORY = 3  # the address-space limit was reached
    KILLED_BY_POLICY = 4  # the jail stopped a forbidden action (syscall named in the log)
    OUTPUT_TOO_LARGE = 5  # stdout passed the cap
    BUSY = 6  # the executor's queue was full; retry elsewhere
    NOT_FOUND = 7  # no such fid here
    DENIED = 8  # the capability token was missing or wrong
    REFUSED = 9  # the executor refuses untrusted code (a jail layer is missing)
    INTERNAL = 10  # the host failed for reasons of its own
