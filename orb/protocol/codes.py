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
    MEMORY = 3  # the call's memory cgroup OOM-killed it (any runtime); without a cgroup, a failed allocation is error
    KILLED_BY_POLICY = 4  # the jail stopped a forbidden syscall (named in the message where the kernel says)
    OUTPUT_TOO_LARGE = 5  # stdout passed the cap
    BUSY = 6  # the executor's queue was full; retry elsewhere
    NOT_FOUND = 7  # no such fid here
    DENIED = 8  # the capability token was missing or wrong
    REFUSED = 9  # the executor refuses untrusted code (a jail layer is missing)
    INTERNAL = 10  # the host failed for reasons of its own
    GONE = 11  # the fid is past the sunset its owner set (RFC 9.10): it is served nowhere any more
    PAYMENT_REQUIRED = 12  # the manifest requires payment and the fid's escrow cannot pay for the call (RFC 10.10.2)


class ErrorCode(enum.IntEnum):
    """ERROR.code: why a node refused a frame or a request."""

    UNSPECIFIED = 0
    MALFORMED = 1  # the body did not decode; the connection is closed
    FRAME_TOO_LARGE = 2  # the header announced more than the receiver accepts; closed
    UNEXPECTED = 3  # a valid message that the session state does not allow
    UNSUPPORTED = 4  # an unknown or unserved message type, or an unknown critical TLV; the session goes on
    VERSION = 5  # no protocol version in common; closed
    IDENTITY = 6  # the TLS certificate key does not match HELLO's key or node id; closed
    SELF_CONNECTION = 7  # the HELLO nonce is one of our own; closed
    TIMEOUT = 8  # the handshake or the idle timer ran out; closed
    RATE_LIMITED = 9  # too many requests in flight; the request is refused
    NETWORK = 10  # reserved: another network's magic (such sessions are closed without ERROR)
    NOT_FOUND = 11  # the fid or node named in the request is not known
    DENIED = 12  # the request is not authorised (bad signature, bad token)
    BUSY = 13  # the node is overloaded; try another
    INTERNAL = 14  # the sender failed for reasons of its own
    SHUTDOWN = 15  # the sender is going away; reconnect elsewhere
    OUT_OF_RANGE = 16  # a FETCH offset at or past the package's end, a length outside 1..1048576, or an INVOKE deadline_ms over the host's maximum
    DECLINED = 17  # DEPLOY_ACK status: the peer's hosting policy declines the OFFER (the text names the policy)
    TOO_LARGE = 18  # the request names or carries something larger than the receiver accepts (a package, an INVOKE input over its cap)
    INVALID = 19  # well-formed but refused for its content (a bad manifest, a package that does not match its fid, failing samples); the session goes on
    GONE = 20  # the fid is past the sunset its owner set (RFC 9.10); a LOOKUP or an undeprecation of it is refused
    STALE = 21  # a NAME or owner statement whose seq is not higher than the one held; nothing changed


class Role(enum.IntFlag):
    """Role bits, in HELLO and in ADDR entries."""

    PEER = 0x01  # hosts and runs functions
    TRACKER = 0x02  # keeps a registry, routes, answers DNS
    RELAY = 0x04  # forwards RELAY frames to peers behind NAT


class Feature(enum.IntFlag):
    """Feature bits, negotiated in the handshake (the AND of both sides)."""

    RELAY = 1 << 0  # understands RELAY frames
    FEDERATION = 1 << 1  # exchanges registry changes (trackers)
    CHUNKED_PACKAGE = 1 << 2  # OFFER / FETCH / PACKAGE transfer
    RESULT_CACHE = 1 << 3  # may answer INVOKE from a result cache


# Features this implementation understands; anything else is ignored.
SUPPORTED_FEATURES = Feature.RELAY | Feature.FEDERATION | Feature.CHUNKED_PACKAGE | Feature.RESULT_CACHE


class TlvType(enum.IntEnum):
    """
    Types of the TLV extension records at the end of every body.

    Bit 15 (0x8000) marks a record critical: a receiver that does not know
    a critical type must refuse the message with ERROR(unsupported).
    Unknown non-critical records are ignored (and kept for re-encoding).
    """

    PADDING = 0x0001  # ignored; lets a sender hide message lengths
    TRACE_ID = 0x0002  # 16 opaque bytes that correlate logs across nodes
    CACHED = 0x0003  # in RESULT: the answer came from a result cache; u32 age in ms
    OWNER_KEY = 0x0004  # in OFFER: the function owner's 32-byte Ed25519 key, from the deploy statement
    REPLICA = 0x0005  # in RESULT from a tracker: the 32-byte node id of the host that ran the call
    CALLER = 0x0006  # in INVOKE from a tracker: the 32-byte key of the caller it checked the token's binding against
    SEALER = 0x0007  # in ANNOUNCE: an owner key (32) and its signature (64) naming the peer a sealer for it (RFC 9.12)


TLV_CRITICAL = 0x8000
