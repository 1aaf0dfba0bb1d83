# -*- test-case-name: tests.test_functions -*-
"""
Calls through a tracker (RFC 10.2): the gateway's ``POST /f/<fid>`` and
INVOKE sent to a tracker both come here.

The router takes the function's verified replicas best first (the one
ranking, orb.tracker.routing) and forwards INVOKE to the first it holds a
session with, with ``deadline_ms`` reduced by the time already spent. A
replica that fails before it answers (its session lost, RESULT ``busy`` or
``not_found``) is skipped for the next; a call that may have started is
not retried. The answer is the replica's RESULT; with no usable replica it
is RESULT ``busy`` (the function has replicas, none can take the call) or
``not_found`` (no such function).

This is the first cut of issue 11: no hedging, no relay to peers homed
elsewhere, no per-peer concurrency bookkeeping yet.
"""

import attrs
from twisted.internet import defer, error

from orb.net.adapter import RemoteError, RequestTimeout
from orb.protocol import fid as fidmod
from orb.protocol import messages as m
from orb.protocol.codes import ErrorCode, ResultStatus
from orb.protocol.messages import MessageType
from orb.tracker.routing import rank_replicas

DEFAULT_DEADLINE_S = 10.0
MAX_DEADLINE_S = 300.0
RETRY_BEFORE_START = (ResultStatus.BUSY, ResultStatus.NOT_FOUND)


def result(status, text=""):
    return m.Result(status=int(status), queue_us=0, fetch_us=0, boot_us=0, exec_us=0, output=b"",
                    log=text.encode("utf-8"))


@attrs.frozen
class Answer:
    """A call's RESULT, the replica that gave it (None: none did), and the time spent at the tracker."""

    result: m.Result
    replica: bytes | None = None
    network_us: int = 0
    cached: bool = False  # served from the tracker's result cache (RFC 10.6), not by a run
    route: str = "direct"  # how the replica was reached: "direct" (its session here), "relay" (RFC 10.3)
    attempts: int = 1  # replicas asked, hedges included


class Router:
    def __init__(self, clock, table, registry, replication):
        self.clock = clock
        self.table = table
        self.registry = registry
        self.replication = replication

    def handlers(self):
        return {MessageType.INVOKE: self.on_invoke}

    def on_invoke(self, record, message, request_id):
        d = self.call(message.fid, message.input, message.deadline_ms / 1000 if message.deadline_ms else None,
                      message.token)
        d.addCallback(lambda answer: record.send(answer.result, response_to=request_id))

    @defer.inlineCallbacks
    def call(self, fid_raw, data, deadline_s=None, token=b""):
        """Run ``fid_raw`` once on its best replica: Deferred[Answer], never an errback."""
        started = self.clock.seconds()
        try:
            fid = fidmod.to_text(fid_raw)
        except fidmod.FidError:
            return Answer(result(ResultStatus.NOT_FOUND, "not a fid"))
        function = self.registry.function(fid)
        if function is None:
            return Answer(result(ResultStatus.NOT_FOUND, f"no function {fid} is deployed"))
        budget = min(deadline_s or function.manifest_json()["timeout_ms"] / 1000 + 1, MAX_DEADLINE_S)
        tried = 0
        for peer in rank_replicas(self.replication.replicas(fid)):
            record = self.table.get(peer.node_id)
            if record is None or not record.ready:
                continue
            remaining = budget - (self.clock.seconds() - started)
            if remaining <= 0:
                return Answer(result(ResultStatus.TIMEOUT, "the deadline passed before a replica could take the call"))
            tried += 1
            sent = self.clock.seconds()
            try:
                answer = yield record.request(
                    m.Invoke(fid=fid_raw, deadline_ms=max(1, int(remaining * 1000)), token=token, input=data),
                    timeout_s=remaining + 1.0)
            except (error.ConnectionLost, error.ConnectionDone):
                continue  # it never answered: try the next replica
            except RequestTimeout:
                return Answer(result(ResultStatus.TIMEOUT, "the replica did not answer within the deadline"),
                              peer.node_id)
            except RemoteError as e:
                if e.code in (int(ErrorCode.BUSY), int(ErrorCode.RATE_LIMITED)):
                    continue
                return Answer(result(ResultStatus.INTERNAL, f"the replica refused the call: {e.text[:200]}"),
                              peer.node_id)
            if answer.status_kind in RETRY_BEFORE_START:
                continue
            at_host_us = answer.queue_us + answer.fetch_us + answer.boot_us + answer.exec_us
            network_us = max(0, int((self.clock.seconds() - sent) * 1e6) - at_host_us)
            return Answer(answer, peer.node_id, network_us)
        if tried:
            return Answer(result(ResultStatus.BUSY, "every replica was busy or unreachable; try again shortly"))
        return Answer(result(ResultStatus.BUSY, "no live replica can take the call right now"))
