# -*- test-case-name: tests.test_names -*-
"""
DEPRECATE at a host (RFC 9.10): the owner's deprecation of a fid this peer
hosts, pushed by a tracker, and what the host does at the sunset.

The host takes a DEPRECATE only from a tracker session (``denied``
otherwise). It checks the owner's signature and content (orb.protocol.names),
that it holds the fid (``not_found``), that ``owner_key`` is the owner key
the fid's OFFER named (``denied`` when it differs or none was named), and
keeps, per fid, the record with the highest seq in the package store
(``stale`` for a lower or equal one; an exact replay answers 0; ``gone``
once the held one is past its sunset). It answers STATEMENT_ACK.

At the sunset of the record it keeps (at once if already past) the host
refuses INVOKE of the fid with RESULT ``gone``, declines an OFFER of it,
and drops the package through the store's removal path, so that Hosting
leaves it out of the next ANNOUNCE. The sunset is scheduled on the clock;
on start the records kept in the store are scheduled again.
"""

from orb.net.logs import orb_logger
from orb.protocol import fid as fidmod
from orb.protocol import messages as m
from orb.protocol import names as nm
from orb.protocol.codes import ErrorCode
from orb.protocol.messages import MessageType

log = orb_logger()


def _ack(status, seq, text=""):
    return m.StatementAck(status=int(status), seq=seq, text=text[: m.MAX_ERROR_TEXT_BYTES])


class Deprecations:
    """The host's deprecations; see the module docstring."""

    def __init__(self, clock, store):
        self.clock = clock
        self.store = store  # orb.net.packages.PackageStore
        self._timers = {}  # fid -> the DelayedCall of its sunset

    def handlers(self):
        return {MessageType.DEPRECATE: self.on_deprecate}

    def start(self):
        for message in self.store.deprecations():
            self._schedule(message)

    def stop(self):
        for call in self._timers.values():
            if call.active():
                call.cancel()
        self._timers.clear()

    def is_gone(self, fid):
        """True when the owner's sunset of ``fid`` (raw) has passed, by the record this host keeps."""
        message = self.store.deprecation(fid)
        return message is not None and bool(message.deprecated) and nm.is_gone(message.sunset, self.clock.seconds())

    def on_deprecate(self, record, message, request_id):
        if not record.is_tracker:
            record.refuse(request_id, ErrorCode.DENIED, "only a tracker may push DEPRECATE")
            return
        ack = self.take(message)
        if ack.status and ack.status != ErrorCode.STALE:
            log.info("DEPRECATE refused: {text}", text=ack.text[:120])
        if request_id:
            record.send(ack, response_to=request_id)

    def take(self, message):
        """Check and keep a DEPRECATE; the STATEMENT_ACK to answer."""
        try:
            nm.check_deprecate(message)
        except nm.StatementError as e:
            return _ack(e.code, 0, e.text)
        fid = message.fid
        held = self.store.deprecation(fid)
        held_seq = held.seq if held is not None else 0
        if fid not in self.store:
            return _ack(ErrorCode.NOT_FOUND, held_seq, "this host does not hold the fid")
        owner = self.store.owner(fid)
        if owner is None or owner != message.owner_key:
            return _ack(ErrorCode.DENIED, held_seq, "the signer is not the owner this host was told of")
        if held is not None:
            if _fields(held) == _fields(message):
                return _ack(0, held_seq, "already held")
            if held.deprecated and nm.is_gone(held.sunset, self.clock.seconds()):
                return _ack(ErrorCode.GONE, held_seq, "past its sunset: it stays gone")
            if message.seq <= held.seq:
                return _ack(ErrorCode.STALE, held_seq, f"seq {message.seq} is not above the {held.seq} held")
        d = self.store.set_deprecation(message)
        d.addErrback(lambda f: log.failure("keeping the deprecation of {fid}", f, fid=fidmod.to_text(fid)[:16]))
        self._schedule(message)
        return _ack(0, message.seq)

    def _schedule(self, message):
        fid = message.fid
        call = self._timers.pop(fid, None)
        if call is not None and call.active():
            call.cancel()
        if not message.deprecated or not message.sunset:
            return
        delay = max(0.0, message.sunset - self.clock.seconds())
        self._timers[fid] = self.clock.callLater(delay, self._sunset, fid)

    def _sunset(self, fid):
        self._timers.pop(fid, None)
        if not self.is_gone(fid) or fid not in self.store:
            return
        log.info("{fid} is past its owner's sunset: no longer served, package dropped", fid=fidmod.to_text(fid))
        d = self.store.remove(fid, "past its owner's sunset (deprecated)")
        d.addErrback(lambda f: log.failure("dropping {fid} at its sunset", f, fid=fidmod.to_text(fid)[:16]))


def _fields(message):
    return {a: getattr(message, a) for a in ("owner_key", "fid", "seq", "deprecated", "successor", "sunset",
                                             "signature")}
