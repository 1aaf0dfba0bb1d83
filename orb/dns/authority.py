# -*- test-case-name: tests.test_dns -*-
"""
The authority for ``.orb``: an ``IResolver`` over the tracker's registry,
in the style of ``twisted.names.authority`` but with no zone file: every
answer is made from the registry when it is asked (RFC 9.9).

    <fid>.orb A/AAAA         the gateways that can route the function (this tracker's)
    <fid>.orb TXT            v=orb1, name, version, owner, pure, idempotent, gateway URL;
                             deprecated=1, successor, sunset once the owner deprecated it
    _orb._tcp.<fid>.orb SRV  the verified replicas that accept direct connections, best
                             first by the one ranking (orb.tracker.routing, injected); targets
                             <node>.peer.orb, their A/AAAA in the additional section
    seed.orb A/AAAA/SRV      live trackers (SRV port: their wire port)
    <node>.peer.orb,         a peer's or tracker's addresses
    <node>.tracker.orb
    <name>.<owner>.orb       CNAME <fid>.orb of the version the name serves (``names.serving_fid``),
                             and for any other type the target's records of that type after it
    _orb._tcp.<name>.<owner>.orb
                             CNAME _orb._tcp.<fid>.orb, and its SRV records
    unknown or malformed     NXDOMAIN, the zone's SOA in the authority section
    a fid past its sunset    NXDOMAIN (``<fid>.orb`` and ``_orb._tcp.<fid>.orb``)
    a type a name lacks      NOERROR and no answer (NODATA), the SOA in authority
    outside .orb             ``OutOfZone`` (a DomainError): the server refuses it, or its
                             chain passes it on to the forwarder

The SOA serial counts the registry's changes (``registry.watch``), starting
from the sum of the change counters the registry holds, so it grows across
restarts.  ``names`` is the tracker's names core (``orb.tracker.names``):
``serving_fid(owner_label, name) -> fid text | None`` gives what a name
serves, ``fid_status(fid) -> FidStatus | None`` a fid's deprecation; None
(no names core) makes every ``<name>.<owner>.orb`` NXDOMAIN.
"""

import ipaddress

from twisted.internet import defer
from twisted.names import common, dns
from twisted.names import error as dns_error

from orb.dns import names as nm
from orb.dns.names import Kind

DEFAULT_TTL_S = 10
MIN_TTL_S, MAX_TTL_S = 1, 3600
MAX_SRV_RECORDS = 16  # replicas listed in one SRV answer
MAX_SEED_RECORDS = 16  # trackers listed in one seed.orb answer
MAX_ADDRESSES_PER_HOST = 4  # A/AAAA records per SRV target
UNMEASURED_PRIORITY = 64  # SRV priority of a replica whose RTT is not measured yet
SOA_MNAME = b"seed.orb"
SOA_RNAME = b"hostmaster.seed.orb"
SERIAL_MODULUS = 2**32


class OutOfZone(dns_error.DomainError):
    """The name is not in .orb."""


class NoSuchName(dns_error.AuthoritativeDomainError):
    """NXDOMAIN; ``authority`` holds the SOA to send with it (negative caching, RFC 2308)."""

    def __init__(self, name, authority):
        super().__init__(name)
        self.authority = authority


def srv_priority(rtt_ms, load_permille):
    """The SRV priority band of a replica: replicas whose load-inflated RTT is within a factor of two
    share a band (``bit_length`` of ``rtt_ms * (1000 + load) / 1000``); an unmeasured RTT is the last band."""
    if rtt_ms is None:
        return UNMEASURED_PRIORITY
    return int(rtt_ms * (1000 + load_permille) // 1000).bit_length()


def srv_weight(load_permille):
    """The SRV weight: the replica's idle share, so that within a band the idler one is chosen more."""
    return max(1, 1000 - min(1000, load_permille))


def _family(host):
    try:
        return ipaddress.ip_address(host).version
    except ValueError:
        return None


class OrbAuthority(common.ResolverBase):
    """See the module docstring. ``replicas(fid, limit)`` gives a function's replicas that an SRV
    answer may list, best first (the tracker's: ``orb.tracker.wiring.dns_replicas``, so that this
    package imports no role); ``gateways()`` returns this tracker's gateway (host, port) pairs and
    ``gateway_url(fid)`` its URL for a function (or None); ``rng`` picks which trackers seed.orb lists
    when there are more than MAX_SEED_RECORDS; ``names``: see the module docstring."""

    def __init__(self, registry, replicas, *, ttl_s=DEFAULT_TTL_S, gateways=lambda: [],
                 gateway_url=lambda fid: None, names=None, rng=None):
        super().__init__()
        if not MIN_TTL_S <= ttl_s <= MAX_TTL_S:
            raise ValueError(f"ttl_s must be {MIN_TTL_S}..{MAX_TTL_S}")
        self.registry = registry
        self.replicas = replicas
        self.ttl_s = int(ttl_s)
        self.gateways = gateways
        self.gateway_url = gateway_url
        self.names = names
        self.rng = rng
        self.changes = 0
        self._serial_base = sum(registry.digest().known.values())
        registry.watch(self._changed)

    def _changed(self, change):
        self.changes += 1

    @property
    def serial(self):
        """The SOA serial: the registry's changes, counted (RFC 1982 arithmetic wraps it)."""
        return (self._serial_base + self.changes) % SERIAL_MODULUS or 1

    @property
    def version(self):
        """Changes whenever an answer may have changed through the registry's change log."""
        return self.changes

    # -- IResolver ---------------------------------------------------------------

    def _lookup(self, name, cls, type, timeout):
        try:
            return defer.succeed(self.answer(name, type, cls))
        except (OutOfZone, NoSuchName) as e:
            return defer.fail(e)

    # -- answers -----------------------------------------------------------------

    def soa(self):
        record = dns.Record_SOA(mname=SOA_MNAME, rname=SOA_RNAME, serial=self.serial, refresh=self.ttl_s * 6,
                                retry=self.ttl_s, expire=self.ttl_s * 360, minimum=self.ttl_s, ttl=self.ttl_s)
        return dns.RRHeader(name=nm.ZONE.encode(), type=dns.SOA, ttl=self.ttl_s, payload=record, auth=True)

    def answer(self, name, type, cls=dns.IN):
        """(answers, authority, additional) for ``name`` (bytes, as asked) and ``type``; raises
        ``NoSuchName`` (NXDOMAIN) or ``OutOfZone``."""
        parsed = nm.classify(name)
        if parsed.kind is Kind.OUTSIDE:
            raise OutOfZone(name)
        if cls not in (dns.IN, dns.ANY):
            return [], [self.soa()], []
        handler = {
            Kind.APEX: self._apex, Kind.SEED: self._seed, Kind.SEED_SRV: self._seed_srv,
            Kind.FUNCTION: self._function, Kind.FUNCTION_SRV: self._function_srv, Kind.PEER: self._peer,
            Kind.TRACKER: self._tracker, Kind.NAMED: self._named, Kind.NAMED_SRV: self._named_srv,
            Kind.EMPTY: self._empty,
        }.get(parsed.kind)
        result = handler(name, type, parsed) if handler is not None else None
        if result is None:
            raise NoSuchName(name, [self.soa()])
        answers, additional = result
        return answers, ([] if answers else [self.soa()]), additional

    def _rr(self, name, type, payload):
        return dns.RRHeader(name=name, type=type, ttl=self.ttl_s, payload=payload, auth=True)

    def _addresses(self, name, type, hosts):
        """A or AAAA records for the IPs of ``hosts`` ((host, port) pairs) of ``type``'s family."""
        want = {dns.A: 4, dns.AAAA: 6, dns.ALL_RECORDS: None}.get(type, 0)
        seen, out = set(), []
        for host, _port in hosts:
            family = _family(host)
            if family is None or host in seen or (want is not None and family != want):
                continue
            seen.add(host)
            if family == 4:
                out.append(self._rr(name, dns.A, dns.Record_A(host, ttl=self.ttl_s)))
            else:
                out.append(self._rr(name, dns.AAAA, dns.Record_AAAA(host, ttl=self.ttl_s)))
        return out

    def _apex(self, name, type, parsed):
        answers = []
        if type in (dns.SOA, dns.ALL_RECORDS):
            answers.append(self.soa())
        if type in (dns.NS, dns.ALL_RECORDS):
            answers.append(self._rr(name, dns.NS, dns.Record_NS(SOA_MNAME, ttl=self.ttl_s)))
        return answers, []

    def _empty(self, name, type, parsed):
        if parsed.fid is not None and self._live_function(parsed.fid) is None:
            return None
        if parsed.label is not None and self._serving(parsed) is None:
            return None
        return [], []

    # -- names and deprecation (RFC 9.3, 9.10) -----------------------------------

    def _status(self, fid):
        """The fid's deprecation (a FidStatus) or None."""
        return self.names.fid_status(fid) if self.names is not None else None

    def _live_function(self, fid):
        """The function record of ``fid`` unless it is unknown or past its sunset (gone: NXDOMAIN)."""
        function = self.registry.function(fid)
        if function is None:
            return None
        status = self._status(fid)
        if status is not None and status.gone:
            return None
        return function

    def _serving(self, parsed):
        """The fid a ``<name>.<owner>.orb`` serves, or None (nothing: NXDOMAIN)."""
        if self.names is None:
            return None
        fid = self.names.serving_fid(parsed.owner, parsed.label)
        if fid is None or self._live_function(fid) is None:
            return None
        return fid

    def _live_trackers(self):
        trackers = sorted(self.registry.trackers(), key=lambda t: t.node_id != self.registry.tracker_id)
        trackers = [t for t in trackers if t.addresses]
        if len(trackers) > MAX_SEED_RECORDS:
            rest = trackers[1:] if trackers[0].node_id == self.registry.tracker_id else trackers
            head = trackers[:1] if rest is not trackers else []
            picked = self.rng.sample(rest, MAX_SEED_RECORDS - len(head)) if self.rng else rest
            trackers = head + picked[: MAX_SEED_RECORDS - len(head)]
        return trackers

    def _seed(self, name, type, parsed):
        trackers = self._live_trackers()
        answers = self._addresses(name, type, [a for t in trackers for a in t.addresses])
        additional = []
        if type in (dns.SRV, dns.ALL_RECORDS):
            srv, additional = self._seed_srv_records(name, trackers)
            answers += srv
        return answers, additional

    def _seed_srv(self, name, type, parsed):
        if type not in (dns.SRV, dns.ALL_RECORDS):
            return [], []
        return self._seed_srv_records(name, self._live_trackers())

    def _seed_srv_records(self, name, trackers):
        answers, additional = [], []
        for t in trackers:
            target = nm.tracker_name(t.node_id).encode()
            host, port = t.addresses[0]
            answers.append(self._rr(name, dns.SRV, dns.Record_SRV(0, 1, port, target, ttl=self.ttl_s)))
            additional += self._addresses(target, dns.ALL_RECORDS, t.addresses[:MAX_ADDRESSES_PER_HOST])
        return answers, additional

    def _function(self, name, type, parsed):
        function = self._live_function(parsed.fid)
        if function is None:
            return None
        answers = self._addresses(name, type, self.gateways())
        if type in (dns.TXT, dns.ALL_RECORDS):
            answers.append(self._rr(name, dns.TXT, dns.Record_TXT(*self.txt(function), ttl=self.ttl_s)))
        return answers, []

    def txt(self, function):
        """The TXT strings of a function: ``key=value``, each at most 255 bytes."""
        manifest = function.manifest_json()
        if manifest.get("visibility", "public") != "public":  # a private fid shows only that (RFC 10.9)
            fields = [("v", "orb1"), ("visibility", "private")]
            url = self.gateway_url(function.fid)
            return [f"{k}={v}".encode("utf-8")[:255] for k, v in fields + ([("gateway", url)] if url else [])]
        fields = [("v", "orb1"), ("name", manifest.get("name", "")), ("version", manifest.get("version", "")),
                  ("owner", function.owner.hex()), ("pure", int(bool(manifest.get("pure")))),
                  ("idempotent", int(bool(manifest.get("idempotent"))))]
        url = self.gateway_url(function.fid)
        if url:
            fields.append(("gateway", url))
        status = self._status(function.fid)
        if status is not None and status.deprecated:
            fields.append(("deprecated", 1))
            if status.successor:
                fields.append(("successor", status.successor))
            if status.sunset:
                fields.append(("sunset", int(status.sunset)))
        return [f"{k}={v}".encode("utf-8")[:255] for k, v in fields]

    def _function_srv(self, name, type, parsed):
        if self._live_function(parsed.fid) is None:
            return None
        if type not in (dns.SRV, dns.ALL_RECORDS):
            return [], []
        return self._srv_records(name, parsed.fid)

    def _srv_records(self, name, fid):
        answers, additional, band = [], [], 0
        for peer in self.replicas(fid, MAX_SRV_RECORDS)[:MAX_SRV_RECORDS]:
            # The bands follow the ranking's order, so SRV priority never contradicts "best first".
            band = max(band, srv_priority(peer.rtt_ms, peer.load_permille))
            target = nm.peer_name(peer.node_id).encode()
            host, port = peer.addresses[0]
            record = dns.Record_SRV(band, srv_weight(peer.load_permille), port, target, ttl=self.ttl_s)
            answers.append(self._rr(name, dns.SRV, record))
            additional += self._addresses(target, dns.ALL_RECORDS, peer.addresses[:MAX_ADDRESSES_PER_HOST])
        return answers, additional

    def _peer(self, name, type, parsed):
        peer = self.registry.peer(parsed.node_id)
        if peer is None or peer.reachability != "reachable" or not peer.addresses:
            return None
        return self._addresses(name, type, peer.addresses[:MAX_ADDRESSES_PER_HOST]), []

    def _tracker(self, name, type, parsed):
        tracker = self.registry.tracker(parsed.node_id)
        if tracker is None or not tracker.addresses:
            return None
        return self._addresses(name, type, tracker.addresses[:MAX_ADDRESSES_PER_HOST]), []

    def _named(self, name, type, parsed):
        """``<name>.<owner>.orb``: a CNAME to ``<fid>.orb`` of the version the name serves, then, as a
        resolver expects of an authority for both names, the target's records of the type asked."""
        fid = self._serving(parsed)
        if fid is None:
            return None
        target = nm.function_name(fid).encode()
        answers = [self._rr(name, dns.CNAME, dns.Record_CNAME(target, ttl=self.ttl_s))]
        if type == dns.CNAME:
            return answers, []
        more, additional = self._function(target, type, nm.Name(Kind.FUNCTION, fid=fid))
        return answers + more, additional

    def _named_srv(self, name, type, parsed):
        """``_orb._tcp.<name>.<owner>.orb``: a CNAME to ``_orb._tcp.<fid>.orb``, then its SRV records."""
        fid = self._serving(parsed)
        if fid is None:
            return None
        target = nm.srv_name(fid).encode()
        answers = [self._rr(name, dns.CNAME, dns.Record_CNAME(target, ttl=self.ttl_s))]
        if type not in (dns.SRV, dns.ALL_RECORDS):
            return answers, []
        srv, additional = self._srv_records(target, fid)
        return answers + srv, additional
