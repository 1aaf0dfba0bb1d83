# -*- test-case-name: tests.test_dns_live -*-
"""
The tracker's DNS as a child service (``--dns HOST:PORT``): the authority
over the core's registry, the server factory, and one UDP and one TCP
listener on the same address and port.  Port 0 picks a port free for both.
Once listening it adds ``"dns": PORT`` to the daemon's ``ports.json``.
"""

import json
import os

import attrs
from twisted.application import service
from twisted.internet import defer, error
from twisted.names import client
from twisted.names import error as dns_error

from orb.dns.authority import DEFAULT_TTL_S, OrbAuthority
from orb.dns.server import (
    DEFAULT_RRL_PER_S, MAX_FORWARDS_IN_FLIGHT, DNSDatagramProtocol, OrbDNSServerFactory, RateLimiter, StreamFactory,
)
from orb.net.logs import orb_logger

log = orb_logger()

PORT_ATTEMPTS = 20  # port 0: tries at a port free for both UDP and TCP
FORWARD_TIMEOUTS_S = (1, 3)


@attrs.frozen
class DNSConfig:
    listen: tuple  # (host, port)
    ttl_s: int = DEFAULT_TTL_S  # --dns-ttl
    forward: tuple | None = None  # --dns-forward (host, port)
    rrl_per_s: int = DEFAULT_RRL_PER_S  # --dns-rrl, 0 = off


class BoundedForwarder:
    """An IResolver passing queries outside .orb to an upstream server, at most ``max_in_flight`` at once
    (over that: SERVFAIL at once, so a flood cannot queue without bound)."""

    def __init__(self, upstream, reactor, max_in_flight=MAX_FORWARDS_IN_FLIGHT):
        self.resolver = client.Resolver(servers=[upstream], reactor=reactor)
        self.max_in_flight = max_in_flight
        self.in_flight = 0

    def query(self, query, timeout=None):
        if self.in_flight >= self.max_in_flight:
            return defer.fail(dns_error.DNSServerError("too many forwarded queries in flight"))
        self.in_flight += 1
        d = self.resolver.query(query, timeout=FORWARD_TIMEOUTS_S)

        def done(result):
            self.in_flight -= 1
            return result

        return d.addBoth(done)


MAX_GATEWAYS = 8  # A/AAAA records for one <fid>.orb


def live_gateways(registry, own):
    """The gateways a ``<fid>.orb`` A/AAAA answer lists: this tracker's first, then other live trackers'
    from their signed records, on the same port as ours (a URL names one port), at most MAX_GATEWAYS."""
    out = [own] if own else []
    for tracker in registry.trackers():
        for host, port in tracker.gateways[:1]:
            if (host, port) not in out and (own is None or port == own[1]):
                out.append((host, port))
        if len(out) >= MAX_GATEWAYS:
            break
    return out[:MAX_GATEWAYS]


def gateway_of(http_port, advertise):
    """This tracker's gateway (host, port) from its HTTP listening port (an IPv4Address/IPv6Address):
    the listening address, or the advertised host when it listens on a wildcard; None if unknown."""
    if http_port is None:
        return None
    host = http_port.getHost()
    ip = host.host
    if ip in ("0.0.0.0", "::"):
        if not advertise:
            return None
        ip = advertise[0]
    return ip, host.port


def url_of(gateway, fid):
    host, port = gateway
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}/f/{fid}"


class DNSService(service.Service):
    """Serves .orb over UDP and TCP for a core that ``attach(core, gateway)`` hands it."""

    name = "dns"

    def __init__(self, reactor, config, data_dir=None):
        self.reactor = reactor
        self.config = config
        self.data_dir = data_dir
        self.factory = None
        self.authority = None
        self.udp = self.tcp = None

    def attach(self, core, replicas, gateway=None):
        """Build the authority over ``core.registry`` and listen. ``replicas(fid, limit)``: what SRV
        lists (``orb.tracker.wiring.dns_replicas``); ``gateway``: (host, port) or None."""
        self.authority = OrbAuthority(
            core.registry, replicas, ttl_s=self.config.ttl_s, rng=core.rng, names=getattr(core, "names", None),
            gateways=lambda: live_gateways(core.registry, gateway),
            gateway_url=lambda fid: url_of(gateway, fid) if gateway else None)
        forwarder = BoundedForwarder(self.config.forward, self.reactor) if self.config.forward else None
        self.factory = OrbDNSServerFactory(self.authority, self.reactor, forwarder=forwarder,
                                           rate_limiter=RateLimiter(self.reactor, self.config.rrl_per_s))
        self.listen()
        if self.data_dir is not None:
            self._record_port()
        return self.port

    @property
    def port(self):
        return self.tcp.getHost().port if self.tcp is not None else None

    def listen(self):
        host, port = self.config.listen
        udp = DNSDatagramProtocol(self.factory)
        stream = StreamFactory(self.factory, self.reactor)
        for _ in range(PORT_ATTEMPTS if port == 0 else 1):
            tcp = self.reactor.listenTCP(port, stream, interface=host)
            try:
                self.udp = self.reactor.listenUDP(tcp.getHost().port, udp, interface=host, maxPacketSize=65535)
            except error.CannotListenError:
                tcp.stopListening()
                if port != 0:
                    raise
                continue
            self.tcp = tcp
            log.info("DNS for .orb on {host}:{port} (UDP and TCP)", host=host, port=tcp.getHost().port)
            return
        raise error.CannotListenError(host, port, OSError("no port free for both UDP and TCP"))

    def _record_port(self):
        path = os.path.join(self.data_dir, "ports.json")
        try:
            with open(path) as f:
                ports = json.load(f)
        except (OSError, ValueError):
            ports = {}
        ports["dns"] = self.port
        with open(path + ".tmp", "w") as f:
            json.dump(ports, f)
        os.replace(path + ".tmp", path)

    def stopService(self):
        super().stopService()
        waits = []
        for port in (self.udp, self.tcp):
            if port is not None:
                waits.append(defer.maybeDeferred(port.stopListening))
        self.udp = self.tcp = None
        if self.factory is not None:
            for p in list(self.factory.connections):
                p.transport.abortConnection()
        return defer.DeferredList(waits) if waits else None
