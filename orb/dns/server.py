# -*- test-case-name: tests.test_dns -*-
"""
The DNS server around the ``.orb`` authority (RFC 9.9): twisted.names'
``DNSServerFactory`` with the authority (and an optional forwarder) as its
resolvers, and our own UDP and TCP protocols in front of it.

Why our own protocols.  Twisted's are client and server at once (they keep
tables of queries *they* sent), its ``Message.decode`` silently accepts
trailing bytes and a question section cut short, and its ``Message.encode``
"truncates" by cutting the encoded body mid-record.  Tried against
``DNSServerFactory`` with twisted's own ``DNSProtocol`` (Twisted 26.10):
a one-byte TCP segment, or a frame shorter than its prefix, holds the
connection open forever (no idle timeout, no connection cap), and a
12-byte header claiming one question is answered REFUSED *without the QR
bit*, a "query" that another such server would answer in turn.  Here:

* a message is decoded strictly: the whole datagram or TCP frame, no more
  and no less, exactly one question, at most one OPT record; a header we
  can read with a body we cannot is answered FORMERR, anything shorter than
  a header is dropped;
* EDNS0 (RFC 6891): the client's UDP size is honoured, clamped to
  [512, MAX_UDP_PAYLOAD]; an answer that does not fit goes out as the
  header and the question with TC set, so the client asks again over TCP;
  an EDNS version above 0 gets BADVERS;
* TCP frames are length-prefixed (RFC 7766); a connection buffers at most
  one frame, is closed after TCP_IDLE_S without a complete frame, and at
  most MAX_TCP_CONNECTIONS are open at once;
* UDP answers pass a per-source response rate limit (``RateLimiter``):
  over it, every SLIP-th answer is sent as an empty TC answer (no larger
  than the query, so a client behind a spoofer still gets through by TCP)
  and the rest are dropped;
* in-zone answers are cached as bytes per query (the bytes after the id)
  until the registry's change log moves (the authority's ``version``), and
  for at most CACHE_S or the TTL, whichever is shorter (a peer going stale
  is not a logged change), bounded to CACHE_ENTRIES.
"""

import collections
import errno
import ipaddress
import struct
from io import BytesIO

from twisted.internet import defer, protocol
from twisted.names import dns
from twisted.names import error as dns_error
from twisted.names import server

from orb.dns import names as nm
from orb.dns.authority import NoSuchName, OutOfZone
from orb.dns.names import Kind
from orb.net.logs import orb_logger

log = orb_logger()

HEADER = struct.Struct(">HHHHHH")
MAX_UDP_PAYLOAD = 1232  # what we send and advertise (DNS flag day 2020)
MIN_UDP_PAYLOAD = 512
MAX_QUERY_BYTES = 4096  # a query longer than this is dropped unread (UDP) or closes the connection (TCP)
MAX_TCP_CONNECTIONS = 256
TCP_IDLE_S = 10.0
MAX_TCP_PENDING = 16  # answers a TCP connection may have outstanding (forwarded ones wait)
MAX_FORWARDS_IN_FLIGHT = 256
CACHE_S = 5.0  # at most; never longer than the answers' TTL
CACHE_ENTRIES = 10_000
BADVERS = 16
LOG_BYTES = 64

_UDP_DROP_ERRNOS = {errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS, errno.ECONNREFUSED, errno.EHOSTUNREACH,
                    errno.ENETUNREACH, errno.EMSGSIZE, errno.EPERM}

# The rate limiter's defaults (--dns-rrl).
DEFAULT_RRL_PER_S = 50
RRL_TABLE = 65_536
SLIP = 2


def _prefix(host):
    """The source a limit is counted against: an IPv4 /24 or an IPv6 /56 (as BIND's RRL does)."""
    if ":" not in host:
        return host.rpartition(".")[0]  # the reactor hands us dotted quads
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    bits = 24 if ip.version == 4 else 56
    return str(ipaddress.ip_network(f"{ip}/{bits}", strict=False))


def is_loopback(host):
    if host.startswith("127.") or host == "::1":
        return True
    if ":" not in host:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class RateLimiter:
    """A token bucket per source prefix: ``rate_per_s`` answers a second, bursts of ``rate_per_s``.
    The table holds at most ``max_sources`` buckets (the least recently used goes). 0 turns it off;
    loopback sources are exempt unless ``exempt_loopback`` is False."""

    def __init__(self, clock, rate_per_s=DEFAULT_RRL_PER_S, max_sources=RRL_TABLE, exempt_loopback=True):
        self.clock = clock
        self.rate_per_s = float(rate_per_s)
        self.max_sources = max_sources
        self.exempt_loopback = exempt_loopback
        self._buckets = collections.OrderedDict()  # prefix -> [tokens, last time]
        self._slip = 0
        self.limited = 0

    def __len__(self):
        return len(self._buckets)

    def check(self, host):
        """'send', 'slip' (send an empty TC answer instead) or 'drop'."""
        if self.rate_per_s <= 0 or (self.exempt_loopback and is_loopback(host)):
            return "send"
        now = self.clock.seconds()
        key = _prefix(host)
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = [self.rate_per_s, now]
            while len(self._buckets) >= self.max_sources:
                self._buckets.popitem(last=False)
        self._buckets[key] = bucket
        bucket[0] = min(self.rate_per_s, bucket[0] + (now - bucket[1]) * self.rate_per_s)
        bucket[1] = now
        if bucket[0] >= 1:
            bucket[0] -= 1
            return "send"
        self.limited += 1
        self._slip += 1
        return "slip" if self._slip % SLIP == 0 else "drop"


class BadMessage(Exception):
    """A message we cannot answer except with FORMERR (``reply`` is that answer's bytes, or None: drop)."""

    def __init__(self, why, reply=None):
        super().__init__(why)
        self.reply = reply


def _formerr(data):
    """FORMERR for a message whose header we could read: the header echoed, QR set, no sections."""
    (ident, flags, *_counts) = HEADER.unpack_from(data)
    opcode_rd = flags & 0x7900  # opcode and RD, as the query had them
    return HEADER.pack(ident, 0x8000 | opcode_rd | dns.EFORMAT, 0, 0, 0, 0)


def decode_query(data):
    """A query message from exactly ``data``; ``BadMessage`` otherwise."""
    if len(data) < HEADER.size:
        raise BadMessage(f"{len(data)} bytes: shorter than a DNS header")
    (_ident, flags, qdcount, ancount, nscount, arcount) = HEADER.unpack_from(data)
    if flags & 0x8000:
        raise BadMessage("a response, not a query")  # never answer an answer (no loops)
    if qdcount != 1 or ancount or nscount or arcount > 1:
        raise BadMessage(f"{qdcount} questions, {ancount}/{nscount}/{arcount} records", _formerr(data))
    message = dns.Message()
    stream = BytesIO(data)
    try:
        message.decode(stream)
    except Exception as e:  # twisted's decoder raises EOFError, struct.error, ValueError, ...
        raise BadMessage(f"undecodable: {type(e).__name__}", _formerr(data)) from None
    if len(message.queries) != 1 or len(message.additional) != arcount:
        raise BadMessage("cut short", _formerr(data))  # twisted's decode stops quietly at the end of the bytes
    if stream.tell() != len(data):
        raise BadMessage(f"{len(data) - stream.tell()} bytes after the message", _formerr(data))
    if message.additional and message.additional[0].type != dns.OPT:
        raise BadMessage("an additional record that is not OPT", _formerr(data))
    return message


def edns_of(message):
    """(udp payload size, version) of the query's OPT record, or None without EDNS."""
    for rr in message.additional:
        if rr.type == dns.OPT:
            return rr.cls, (rr.ttl >> 16) & 0xFF
    return None


def encode_response(response, edns, limit):
    """The bytes of ``response`` (a dns.Message), with an OPT record when the query had EDNS, and with
    only the header and question (TC set) when it would not fit in ``limit`` bytes (None: no limit)."""
    if edns is not None:
        response.additional = list(response.additional) + [dns._OPTHeader(udpPayloadSize=MAX_UDP_PAYLOAD)]
    response.maxSize = 0  # twisted's own truncation cuts records in half; ours is below
    data = response.toStr()
    if limit is not None and len(data) > limit:
        response.answers, response.authority = [], []
        response.additional = [dns._OPTHeader(udpPayloadSize=MAX_UDP_PAYLOAD)] if edns is not None else []
        response.trunc = 1
        data = response.toStr()
    return data


class OrbDNSServerFactory(server.DNSServerFactory):
    """``DNSServerFactory([authority], clients=[forwarder])``, answering as the module docstring says.
    ``rate_limiter`` is a RateLimiter; ``clock`` times the answer cache."""

    def __init__(self, authority, clock, *, forwarder=None, rate_limiter=None):
        super().__init__(authorities=[authority], clients=[forwarder] if forwarder is not None else None)
        self.authority = authority
        self.clock = clock
        self.rate_limiter = rate_limiter or RateLimiter(clock, 0)
        self.connections = []
        self.cache_s = min(CACHE_S, authority.ttl_s)
        self._cache = collections.OrderedDict()  # (transport kind, query bytes after the id) -> (version, time, reply tail)
        self.counts = collections.Counter()

    # -- from the protocols ----------------------------------------------------

    def datagram_received(self, data, transport, addr):
        """One UDP datagram: answer, slip or drop it."""
        self.counts["udp_queries"] += 1
        if len(data) > MAX_QUERY_BYTES:
            self.counts["dropped"] += 1
            return
        verdict = self.rate_limiter.check(addr[0])
        if verdict == "drop":
            self.counts["rate_limited"] += 1
            return
        self._handle(data, lambda reply: transport.write(reply, addr), "udp", slip=verdict == "slip")

    def frame_received(self, data, tcp):
        self.counts["tcp_queries"] += 1
        self._handle(data, tcp.send_frame, "tcp")

    # -- answering -------------------------------------------------------------

    def _handle(self, data, send, kind, slip=False):
        cached = self._cached(kind, data)
        if cached is not None and not slip:
            self.counts["cache_hits"] += 1
            send(data[:2] + cached)
            return
        try:
            message = decode_query(data)
        except BadMessage as e:
            self.counts["formerr" if e.reply else "dropped"] += 1
            log.debug("DNS: bad {kind} message ({why}): {head!r}", kind=kind, why=e, head=data[:LOG_BYTES])
            if e.reply is not None:
                send(e.reply)
            return
        edns = edns_of(message)
        limit = None
        if kind == "udp":
            size = edns[0] if edns is not None else MIN_UDP_PAYLOAD
            limit = max(MIN_UDP_PAYLOAD, min(size, MAX_UDP_PAYLOAD))
        if slip:
            response = self._responseFromMessage(message)
            response.trunc = 1
            send(encode_response(response, edns, None))
            return
        if edns is not None and edns[1] != 0:
            send(send_badvers(self._responseFromMessage(message), edns))
            return
        if message.opCode != dns.OP_QUERY:
            response = self._responseFromMessage(message, rCode=dns.ENOTIMP)
            send(encode_response(response, edns, limit))
            return
        query = message.queries[0]
        in_zone = nm.classify(query.name.name).kind is not Kind.OUTSIDE
        if in_zone and query.type in (dns.AXFR, dns.IXFR):
            # There is no zone to transfer: the answers are made per question.
            send(encode_response(self._responseFromMessage(message, rCode=dns.EREFUSED), edns, limit))
            return
        d = self.resolver.query(query)
        d.addCallback(self._answered, message, in_zone)
        d.addErrback(self._failed, message)
        d.addCallback(lambda response: encode_response(response, edns, limit))
        d.addCallback(self._send_and_cache, send, kind, data, in_zone)
        d.addErrback(lambda f: log.failure("DNS: answering failed", f))

    def _answered(self, result, message, in_zone):
        answers, authority, additional = result
        response = self._responseFromMessage(message, rCode=dns.OK, answers=answers, authority=authority,
                                             additional=additional)
        if not in_zone:
            response.auth = 0  # a forwarded answer: the upstream's authority is not ours
        return response

    def _failed(self, failure, message):
        if failure.check(NoSuchName):
            response = self._responseFromMessage(message, rCode=dns.ENAME, authority=failure.value.authority)
            response.auth = 1
            return response
        if failure.check(OutOfZone):
            return self._responseFromMessage(message, rCode=dns.EREFUSED)
        if failure.check(dns_error.DNSNameError):
            return self._responseFromMessage(message, rCode=dns.ENAME)
        if failure.check(dns_error.DNSQueryRefusedError):
            return self._responseFromMessage(message, rCode=dns.EREFUSED)
        if not failure.check(dns_error.DomainError, defer.TimeoutError, dns_error.ResolverError):
            log.failure("DNS: lookup failed", failure)
        return self._responseFromMessage(message, rCode=dns.ESERVER)

    def _responseFromMessage(self, message, rCode=dns.OK, answers=None, authority=None, additional=None):
        response = super()._responseFromMessage(message, rCode, answers, authority, additional)
        if rCode == dns.OK and (answers or authority):
            response.auth = any(rr.auth for rr in (answers or []) + (authority or []))
        return response

    def _send_and_cache(self, reply, send, kind, data, in_zone):
        send(reply)
        if in_zone:
            self._cache.pop((kind, data[2:]), None)
            self._cache[(kind, data[2:])] = (self.authority.version, self.clock.seconds(), reply[2:])
            while len(self._cache) > CACHE_ENTRIES:
                self._cache.popitem(last=False)

    def _cached(self, kind, data):
        entry = self._cache.get((kind, data[2:]))
        if entry is None:
            return None
        version, at, tail = entry
        if version != self.authority.version or not 0 <= self.clock.seconds() - at < self.cache_s:
            del self._cache[(kind, data[2:])]
            return None
        return tail

    # twisted's DNSServerFactory entry points, for callers that use them directly
    def messageReceived(self, message, proto, address=None):
        raise NotImplementedError("the ORB DNS protocols call datagram_received and frame_received")


def send_badvers(response, edns):
    """BADVERS (RFC 6891 6.1.3): RCODE 0 in the header, the upper bits (1) in the OPT record."""
    response.answers, response.authority = [], []
    response.additional = [dns._OPTHeader(udpPayloadSize=MAX_UDP_PAYLOAD, extendedRCODE=BADVERS >> 4)]
    response.rCode = BADVERS & 0xF
    response.maxSize = 0
    return response.toStr()


class DNSDatagramProtocol(protocol.DatagramProtocol):
    """UDP: every datagram goes to the factory, which answers, slips or drops it through ``write``."""

    noisy = False

    def __init__(self, factory):
        self.factory = factory

    def datagramReceived(self, data, addr):
        try:
            self.factory.datagram_received(data, self, addr)
        except Exception:
            log.failure("DNS: a datagram from {addr} raised", addr=addr)

    def write(self, data, addr):
        """``sendto`` straight on the socket: ``addr`` came from ``recvfrom``, so twisted's per-datagram
        address checks (a fifth of the time an answer takes) are not needed. An answer the kernel will not
        take now (a full buffer) is dropped, as UDP may drop it anyway."""
        try:
            self.transport.socket.sendto(data, addr)
        except OSError as e:
            if e.errno not in _UDP_DROP_ERRNOS:
                raise
            self.factory.counts["send_dropped"] += 1


class DNSStreamProtocol(protocol.Protocol):
    """TCP (RFC 7766): two-byte length-prefixed frames, one buffered at a time, closed when idle."""

    def __init__(self, factory, clock):
        self.factory = factory
        self.clock = clock
        self._buffer = bytearray()
        self._idle = None
        self.pending = 0

    def connectionMade(self):
        if len(self.factory.connections) >= MAX_TCP_CONNECTIONS:
            self.factory.counts["tcp_refused"] += 1
            self.transport.abortConnection()
            return
        self.factory.connections.append(self)
        self._idle = self.clock.callLater(TCP_IDLE_S, self._timed_out)

    def _timed_out(self):
        self._idle = None
        self.transport.loseConnection()

    def dataReceived(self, data):
        self._buffer += data
        while len(self._buffer) >= 2:
            (size,) = struct.unpack_from(">H", self._buffer)
            if size > MAX_QUERY_BYTES:
                log.debug("DNS: a {size}-byte TCP frame: closing", size=size)
                self.transport.loseConnection()
                self._buffer.clear()
                return
            if len(self._buffer) < 2 + size:
                return  # wait for the rest, until the idle timer
            frame = bytes(self._buffer[2:2 + size])
            del self._buffer[:2 + size]
            if self._idle is not None and self._idle.active():
                self._idle.reset(TCP_IDLE_S)
            if self.pending >= MAX_TCP_PENDING:
                self.transport.loseConnection()
                return
            self.pending += 1
            try:
                self.factory.frame_received(frame, self)
            except Exception:
                log.failure("DNS: a TCP frame raised")

    def send_frame(self, reply):
        self.pending = max(0, self.pending - 1)
        if self.transport is not None and self.connected:
            self.transport.write(struct.pack(">H", len(reply)) + reply)

    def connectionLost(self, reason):
        self.connected = 0  # an answer still on its way (a forwarded one) is not written
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        self._idle = None
        if self in self.factory.connections:
            self.factory.connections.remove(self)


class StreamFactory(protocol.ServerFactory):
    """The TCP side's protocol factory, over the same OrbDNSServerFactory."""

    noisy = False

    def __init__(self, dns_factory, clock):
        self.dns_factory = dns_factory
        self.clock = clock

    def buildProtocol(self, addr):
        return DNSStreamProtocol(self.dns_factory, self.clock)
