# -*- test-case-name: tests.test_adapter -*-
"""
The thin Twisted adapter: a Protocol that feeds a Session and hands its
events to a handler (the node's core). The only module of orb.protocol
that knows about transports; it still takes time from an injected clock.

A handler is any object with these methods (see ``SessionHandler``):

    session_ready(protocol)                     the handshake finished
    message_received(protocol, message, request_id)   a request or notification
    session_lost(protocol, reason)              the connection is gone
    misbehaved(protocol, error)                 the remote broke a rule
    rtt_measured(protocol, rtt_ms)              a PONG came back

Requests are sent with ``protocol.request(message)``, which returns a
Deferred that fires with the response message, or fails with RemoteError
(the remote answered ERROR), RequestTimeout or ConnectionLost.
"""

import collections

from twisted.internet import defer, error
from twisted.internet.interfaces import IHandshakeListener, IPushProducer
from twisted.internet.protocol import Factory, Protocol
from zope.interface import implementer

from orb.net.logs import escape, orb_logger
from orb.protocol.codes import ErrorCode
from orb.protocol.errors import IdentityMismatch
from orb.protocol.messages import Cancel, Endpoint, MessageType
from orb.protocol.session import (
    AddrThrottled,
    ErrorReceived,
    HandshakeCompleted,
    MessageReceived,
    Misbehaved,
    RttMeasured,
    Session,
    SessionConfig,
    SessionFailed,
    State,
)

log = orb_logger()

MAX_OWN_NONCES = 4096
CLOSE_GRACE_S = 2.0  # after loseConnection, abort if the remote has not let go (e.g. a stalled TLS handshake)
# Backpressure: when the remote stops reading, the transport pauses us. We
# then stop reading from the remote (it gets no more answers to queue), and
# drop it if it is still not reading after OUTPUT_STALL_S or if what we had
# to write while paused passes MAX_QUEUED_OUTPUT_BYTES.
OUTPUT_STALL_S = 30.0
MAX_QUEUED_OUTPUT_BYTES = 8 * 1024 * 1024
_NO_PAUSES = frozenset()


class RemoteError(Exception):
    """The remote answered a request with ERROR."""

    def __init__(self, code, text):
        super().__init__(f"{_code_name(code)}: {text}")
        self.code = code
        self.text = text


class RequestTimeout(Exception):
    """No answer within the request's timeout."""


def _code_name(code):
    try:
        return ErrorCode(code).name.lower()
    except ValueError:
        return f"code {code}"


class SessionHandler:
    """A handler that ignores everything; subclass what you need."""

    def session_ready(self, protocol):
        pass

    def message_received(self, protocol, message, request_id):
        pass

    def session_lost(self, protocol, reason):
        pass

    def misbehaved(self, protocol, error):
        pass

    def rtt_measured(self, protocol, rtt_ms):
        pass


class OwnNonces:
    """The HELLO nonces a node sent recently, shared by its client and server sides."""

    def __init__(self, limit=MAX_OWN_NONCES):
        self._order = collections.deque(maxlen=limit)
        self._set = set()

    def add(self, nonce):
        if len(self._order) == self._order.maxlen:
            self._set.discard(self._order[0])
        self._order.append(nonce)
        self._set.add(nonce)

    def __contains__(self, nonce):
        return nonce in self._set


def _endpoint_of(address):
    host = getattr(address, "host", None)
    port = getattr(address, "port", 0)
    try:
        return Endpoint(host, port)
    except (TypeError, ValueError):
        return Endpoint("::", 0)


@implementer(IHandshakeListener, IPushProducer)
class OrbProtocol(Protocol):
    def __init__(self, factory, expected_node_id=None):
        self.factory = factory
        self.expected_node_id = expected_node_id
        self.session = None
        self.rtt_ms = None
        self._waiting = {}  # request id -> (Deferred, timeout call)
        self._timer = None
        self._abort_timer = None
        self._last_rx_head = b""
        self._paused = False
        self._queued_while_paused = 0
        self._stall_timer = None
        # Why we are not reading from the remote now ("output", "apply", ...): rarely any, so an
        # immutable set, replaced on change, and one shared empty one (an empty set is 216 bytes).
        self._read_pauses = _NO_PAUSES

    # --- Twisted callbacks ----------------------------------------------------

    def connectionMade(self):
        f = self.factory
        identity = f.identity() if callable(f.identity) else f.identity  # a callable: what we say now
        self.session = Session(
            identity,
            f.clock,
            initiator=f.initiator,
            remote_address=_endpoint_of(self.transport.getPeer()),
            config=f.config,
            is_own_nonce=f.own_nonces.__contains__,
            expected_node_id=self.expected_node_id,
        )
        self.session.on_frame = f.frame_counter
        if f.initiator:
            f.own_nonces.add(self.session.local_nonce)
        self.session.connection_made()
        self._flush()
        self._reschedule()

    def handshakeCompleted(self):
        if self.factory.tls_binding:
            from orb.net.tls import peer_ed25519_key

            self.session.certificate_key = peer_ed25519_key(self.transport)

    def dataReceived(self, data):
        if self.factory.tls_binding and self.session.certificate_key is None:
            self.handshakeCompleted()
            if self.session.certificate_key is None:
                self._dispatch(self.session.abort(IdentityMismatch("the TLS certificate holds no Ed25519 key")))
                return
        self._last_rx_head = data[:64]
        self._observe("rx", data)
        events = self.session.feed(data)
        self._flush()
        self._dispatch(events)
        if self.session.state is State.ERROR and self._abort_timer is None:
            self.disconnect()  # e.g. the remote refused the handshake
        self._reschedule()

    def connectionLost(self, reason=None):
        if self._abort_timer is not None and self._abort_timer.active():
            self._abort_timer.cancel()
        if self._stall_timer is not None and self._stall_timer.active():
            self._stall_timer.cancel()
        if self.session is not None:
            self.session.connection_lost()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        waiting, self._waiting = self._waiting, {}
        for d, timeout in waiting.values():
            if timeout.active():
                timeout.cancel()
            d.errback(error.ConnectionLost("session closed"))
        self.factory.handler.session_lost(self, reason)

    # --- API for the node ----------------------------------------------------

    @property
    def remote(self):
        return self.session.remote if self.session else None

    @property
    def ready(self):
        return self.session is not None and self.session.state is State.READY

    def send(self, message, response_to=0):
        """Send a notification or a response; dropped once the session is closing (the remote will not read it)."""
        if not self.ready:
            return
        data = self.session.send(message, response_to=response_to)
        self._write(data)

    def request(self, message, timeout_s=30.0):
        """Send a request; fails with ConnectionLost at once if the session is no longer READY."""
        if not self.ready:
            return defer.fail(error.ConnectionLost("session not ready"))
        request_id, data = self.session.request(message)
        d = defer.Deferred(lambda _: self._withdraw(request_id, message.TYPE))
        timeout = self.factory.clock.callLater(timeout_s, self._request_timed_out, request_id, timeout_s,
                                               message.TYPE)
        self._waiting[request_id] = (d, timeout)
        self._write(data)
        return d

    def _withdraw(self, request_id, message_type):
        """
        The caller cancelled the request's Deferred: forget the request and,
        for INVOKE, tell the host with CANCEL so that it kills the call (RFC 10.5).
        """
        entry = self._waiting.pop(request_id, None)
        if entry is None:
            return
        if entry[1].active():
            entry[1].cancel()
        self.session.forget(request_id)
        if message_type == MessageType.INVOKE:
            self.send(Cancel(request_id=request_id))

    def ping(self):
        if self.ready:
            self._write(self.session.ping())

    def close(self, text="shutting down", code=ErrorCode.SHUTDOWN):
        if self.session.state in (State.HANDSHAKING, State.READY):
            self.session.close(text, code)
            self._flush()
        self.disconnect()

    def disconnect(self):
        """Close gracefully, and abort if that has not happened within CLOSE_GRACE_S."""
        if self.transport is None:
            return
        # A registered producer holds Twisted's TLS transport open (it waits for
        # the producer to unregister before its close_notify): let go first.
        if getattr(self.transport, "producer", None) is self:
            self.transport.unregisterProducer()
        self.transport.loseConnection()
        if self._abort_timer is None:
            self._abort_timer = self.factory.clock.callLater(CLOSE_GRACE_S, self._abort)

    def _abort(self):
        self._abort_timer = None
        abort = getattr(self.transport, "abortConnection", None)
        if abort is not None:
            abort()

    # --- internals -------------------------------------------------------------

    def _write(self, data):
        if self.transport is None:
            return
        if self._paused:
            self._queued_while_paused += len(data)
            if self._queued_while_paused > MAX_QUEUED_OUTPUT_BYTES:
                self._drop_slow_reader(f"over {MAX_QUEUED_OUTPUT_BYTES} bytes queued for it")
                return
        self._observe("tx", data)
        self.transport.write(data)

    # --- IPushProducer: called by the transport --------------------------------

    def _watch_output(self):
        """Once the session is up, the transport tells us when the remote stops reading."""
        register = getattr(self.transport, "registerProducer", None)
        if register is not None and getattr(self.transport, "producer", None) is None:
            try:
                register(self, True)
            except RuntimeError:  # a producer is already registered: that one keeps the job
                pass

    def pauseProducing(self):
        """The remote is not reading what we write: stop reading from it, and give it OUTPUT_STALL_S."""
        if self._paused:
            return
        self._paused = True
        self._queued_while_paused = 0
        self.pause_reading("output")
        self._stall_timer = self.factory.clock.callLater(OUTPUT_STALL_S, self._drop_slow_reader,
                                                         f"not reading for {OUTPUT_STALL_S:g} s")

    def resumeProducing(self):
        if not self._paused:
            return
        self._paused = False
        self._queued_while_paused = 0
        if self._stall_timer is not None and self._stall_timer.active():
            self._stall_timer.cancel()
        self._stall_timer = None
        self.resume_reading("output")

    def stopProducing(self):
        pass  # the connection is going away; connectionLost follows

    @property
    def output_paused(self):
        """True while the remote is not reading what we write (the transport paused us)."""
        return self._paused

    def pause_reading(self, reason):
        """Stop reading from the remote until every reason given here is resumed."""
        if not self._read_pauses:
            self._reader_call("pauseProducing")
        self._read_pauses |= {reason}

    def resume_reading(self, reason):
        if reason not in self._read_pauses:
            return
        self._read_pauses -= {reason}
        if not self._read_pauses and self.transport is not None:
            self._reader_call("resumeProducing")

    def _reader_call(self, name):
        """Pause or resume reading from the remote, on the byte transport under TLS if there is one."""
        transport = self.transport
        target = getattr(transport, name, None) or getattr(getattr(transport, "transport", None), name, None)
        if target is not None:
            target()

    def _drop_slow_reader(self, why):
        self._stall_timer = None
        if self._may_log():
            log.info("dropping {peer}: {why}", peer=self._peer_name(), why=why)
        abort = getattr(self.transport, "abortConnection", None)
        if abort is not None:
            abort()

    def _flush(self):
        data = self.session.data_to_send()
        if data:
            self._write(data)

    def _observe(self, direction, data):
        if self.factory.observer is not None:
            self.factory.observer(self, direction, data)

    def _dispatch(self, events):
        handler = self.factory.handler
        for event in events:
            if isinstance(event, (MessageReceived, Misbehaved)) and not self.ready:
                continue  # closed while this batch was being handled: the rest of it is not served
            if isinstance(event, MessageReceived):
                if event.is_response:
                    self._answer(event.request_id, result=event.message)
                else:
                    handler.message_received(self, event.message, event.request_id)
            elif isinstance(event, HandshakeCompleted):
                self._watch_output()
                handler.session_ready(self)
            elif isinstance(event, RttMeasured):
                self.rtt_ms = event.rtt_ms
                handler.rtt_measured(self, event.rtt_ms)
            elif isinstance(event, ErrorReceived):
                if event.ref_request_id in self._waiting:
                    self._answer(event.ref_request_id, failure=RemoteError(event.code, event.text))
                elif self._may_log():
                    log.info("{peer} sent ERROR {code}: {text}", peer=self._peer_name(), code=_code_name(event.code),
                             text=escape(event.text))
            elif isinstance(event, AddrThrottled):
                # Rate limiting is not misbehaviour: the excess is dropped.
                if self._may_log():
                    log.debug("{peer}: {dropped} ADDR entries over the rate dropped", peer=self._peer_name(),
                              dropped=event.dropped)
            elif isinstance(event, Misbehaved):
                if self._may_log():
                    log.info("{peer} misbehaved: {code}: {reason}", peer=self._peer_name(),
                             code=_code_name(event.error.code), reason=escape(event.error.message))
                handler.misbehaved(self, event.error)
            elif isinstance(event, SessionFailed):
                if self._may_log():
                    log.warn("closing session with {peer}: {code} ({reason}); last input began {head}",
                             peer=self._peer_name(), code=_code_name(event.error.code),
                             reason=escape(event.error.message), head=escape(self._last_rx_head))
                self._flush()
                handler.misbehaved(self, event.error)
                self.disconnect()

    def _may_log(self):
        """Lines this remote causes are rate-limited per remote (node id, or IP before the handshake)."""
        limit = self.factory.log_limit
        if limit is None:
            return True
        remote = self.session.remote if self.session else None
        peer = self.transport.getPeer() if self.transport else None
        return limit.allow(remote.node_id if remote is not None else getattr(peer, "host", None))

    def _answer(self, request_id, result=None, failure=None):
        entry = self._waiting.pop(request_id, None)
        if entry is None:
            return
        d, timeout = entry
        if timeout.active():
            timeout.cancel()
        if failure is not None:
            d.errback(failure)
        else:
            d.callback(result)

    def _request_timed_out(self, request_id, timeout_s, message_type=None):
        self.session.forget(request_id)
        entry = self._waiting.pop(request_id, None)
        if message_type == MessageType.INVOKE:
            self.send(Cancel(request_id=request_id))  # the call is no use to anyone now (RFC 10.5)
        if entry is not None:
            entry[0].errback(RequestTimeout(f"no answer to request {request_id} within {timeout_s:g} s"))

    def _reschedule(self):
        """
        Keep one timer armed for the session's next deadline. Every frame
        received moves the idle deadline later; a timer due no later than the
        deadline is left as it is (it fires early, ``tick`` finds nothing due,
        and it is set again), so a busy session does not cancel and re-add a
        reactor call per frame. Only an earlier deadline, or none, moves it.
        """
        deadline = self.session.next_deadline()
        timer = self._timer
        if timer is not None:
            if timer.active():
                if deadline is not None and timer.getTime() <= deadline:
                    return
                timer.cancel()
            self._timer = None
        if deadline is not None:
            delay = max(0.0, deadline - self.factory.clock.seconds())
            self._timer = self.factory.clock.callLater(delay, self._on_timer)

    def _on_timer(self):
        self._timer = None
        events = self.session.tick()
        self._flush()
        self._dispatch(events)
        self._reschedule()

    def _peer_name(self):
        remote = self.session.remote if self.session else None
        if remote is not None:
            return remote.node_id.hex()[:16]
        peer = self.transport.getPeer() if self.transport else None
        return f"{getattr(peer, 'host', '?')}:{getattr(peer, 'port', '?')}"


class OrbFactory(Factory):
    """Builds OrbProtocols for one node, inbound (initiator=False) or outbound.

    ``identity`` is a LocalIdentity, or a callable returning the one to
    present now (a node learns its advertised address after it listens).
    ``dial`` is the owner's record of the dial this factory serves (None
    for a listener); the adapter only carries it."""

    protocol = OrbProtocol
    noisy = False

    def __init__(
        self,
        identity,
        handler,
        clock,
        *,
        initiator,
        config=SessionConfig(),
        own_nonces=None,
        tls_binding=True,
        expected_node_id=None,
        observer=None,
        frame_counter=None,
        dial=None,
        log_limit=None,
    ):
        self.identity = identity
        self.handler = handler
        self.clock = clock
        self.initiator = initiator
        self.config = config
        self.own_nonces = own_nonces if own_nonces is not None else OwnNonces()
        self.tls_binding = tls_binding
        self.expected_node_id = expected_node_id
        self.observer = observer
        self.frame_counter = frame_counter
        self.dial = dial
        self.log_limit = log_limit  # a RemoteLogLimit shared by the node's sessions, or None

    def buildProtocol(self, addr):
        return self.protocol(self, self.expected_node_id)
