# -*- test-case-name: tests.test_fetch -*-
"""
Serving a package store on the wire: FETCH -> PACKAGE, CHALLENGE -> PROOF
(RFC 5.15-5.18). Both roles wire it: a peer for the functions it hosts, a
tracker for the packages it took by DEPLOY.

    server = PackageServer(store)
    table.handlers.update(server.handlers())

Answers:

- FETCH of a fid the store does not hold (or holds only partly):
  ERROR(not_found) "package <fid> is not held here".
- FETCH with ``offset`` at or past the package's end, or ``length`` outside
  1..MAX_READ_BYTES: ERROR(out_of_range), the text names the bound.
- CHALLENGE for a fid not held: ERROR(not_found); a copy found corrupt
  while proving is dropped from the store and answered the same way.

These are non-fatal: the session goes on and nothing is scored (a
fetcher may ask a node that has just dropped a copy). Reads and proofs run
on the store's file worker; at most MAX_CONCURRENT_READS are submitted at
once, the rest wait their turn (each session has at most 64 requests in
flight, RFC 6.7, so the wait is bounded).
"""

from twisted.internet import defer

from orb.net import packages as pk
from orb.net.logs import orb_logger
from orb.protocol import fid as fidmod
from orb.protocol import messages as m
from orb.protocol.codes import ErrorCode
from orb.protocol.messages import MessageType

log = orb_logger()

MAX_CONCURRENT_READS = 8


def fid_name(raw):
    try:
        return fidmod.to_text(raw)
    except fidmod.FidError:
        return f"(invalid fid {raw[:40].hex()})"


class PackageServer:
    """FETCH and CHALLENGE handlers over a PackageStore."""

    def __init__(self, store):
        self.store = store
        self._reads = defer.DeferredSemaphore(MAX_CONCURRENT_READS)
        self.served_bytes = 0

    def handlers(self):
        return {MessageType.FETCH: self.on_fetch, MessageType.CHALLENGE: self.on_challenge}

    def on_fetch(self, record, message, request_id):
        fid = message.fid
        if fid not in self.store:
            record.refuse(request_id, ErrorCode.NOT_FOUND, f"package {fid_name(fid)} is not held here")
            return
        size = self.store.get(fid).size
        d = self._reads.run(self.store.read, fid, message.offset, message.length)

        def answer(data):
            self.served_bytes += len(data)
            record.send(m.Package(fid=fid, offset=message.offset, total_size=size, data=data),
                        response_to=request_id)

        def refused(failure):
            if failure.check(pk.OutOfRange):
                record.refuse(request_id, ErrorCode.OUT_OF_RANGE,
                              f"{failure.value}: FETCH wants 0 <= offset < {size} and 1 <= length <= "
                              f"{pk.MAX_READ_BYTES}")
            elif failure.check(pk.NotHeld):
                record.refuse(request_id, ErrorCode.NOT_FOUND, f"package {fid_name(fid)} is not held here")
            else:
                log.failure("serving FETCH of {fid}", failure, fid=fid_name(fid))
                record.refuse(request_id, ErrorCode.INTERNAL, "cannot read the package")

        d.addCallbacks(answer, refused)

    def on_challenge(self, record, message, request_id):
        fid = message.fid
        if fid not in self.store:
            record.refuse(request_id, ErrorCode.NOT_FOUND, f"package {fid_name(fid)} is not held here")
            return
        d = self._reads.run(self.store.proof, fid, message.nonce)

        def answer(digest):
            record.send(m.Proof(fid=fid, digest=digest), response_to=request_id)

        def refused(failure):
            if failure.check(pk.NotHeld):
                record.refuse(request_id, ErrorCode.NOT_FOUND, f"package {fid_name(fid)} is not held here")
            else:
                log.failure("proving {fid}", failure, fid=fid_name(fid))
                record.refuse(request_id, ErrorCode.INTERNAL, "cannot read the package")

        d.addCallbacks(answer, refused)
