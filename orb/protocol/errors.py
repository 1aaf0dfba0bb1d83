# -*- test-case-name: tests.test_codec -*-
"""
What the remote side got wrong.

The codec and the session raise only subclasses of ProtocolError on bad
input, however hostile; anything else is a bug of ours. Each class carries
the ErrorCode the RFC assigns to it and whether the session must close.
"""

from orb.protocol.codes import ErrorCode


class ProtocolError(Exception):
    """The remote broke the protocol."""

    code = ErrorCode.UNSPECIFIED
    fatal = True

    def __init__(self, message="", request_id=0):
        super().__init__(message)
        self.message = message
        self.request_id = request_id
        # The header of the offending frame, when a frame caused the error:
        # its RESPONSE flag and type decide how (and whether) it is answered.
        self.flags = 0
        self.message_type = None

    def about_frame(self, message_type, flags, request_id):
        """Record which frame caused the error; returns self."""
        self.message_type = message_type
        self.flags = flags
        self.request_id = request_id
        return self


class DecodeError(ProtocolError):
    """A frame body does not decode as the message its header names."""

    code = ErrorCode.MALFORMED


class FrameTooLarge(ProtocolError):
    """The header announces a body larger than we accept."""

    code = ErrorCode.FRAME_TOO_LARGE


class WrongNetwork(ProtocolError):
    """The magic names another network, or is not ORB at all."""

    code = ErrorCode.NETWORK


class UnexpectedMessage(ProtocolError):
    """A valid message the session's state does not allow."""

    code = ErrorCode.UNEXPECTED
    fatal = False


class UnsupportedMessage(ProtocolError):
    """An unknown message type, or a critical TLV we do not know."""

    code = ErrorCode.UNSUPPORTED
    fatal = False


class VersionMismatch(ProtocolError):
    """No protocol version in common."""

    code = ErrorCode.VERSION


class IdentityMismatch(ProtocolError):
    """The TLS key, HELLO's key and the node id do not agree."""

    code = ErrorCode.IDENTITY


class SelfConnection(ProtocolError):
    """We dialled ourselves."""

    code = ErrorCode.SELF_CONNECTION


class RateLimited(ProtocolError):
    """The remote exceeded a per-session limit."""

    code = ErrorCode.RATE_LIMITED
    fatal = False


class HandshakeTimeout(ProtocolError):
    """The handshake did not finish in time."""

    code = ErrorCode.TIMEOUT
