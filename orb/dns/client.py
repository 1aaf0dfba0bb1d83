# -*- test-case-name: tests.test_dns_live -*-
"""
Asking a tracker's DNS (RFC 9.9): what a peer's bootstrap, ``orb resolve``
and ``orb invoke --direct`` need, with twisted.names' client (which
retries over TCP when an answer comes back truncated).

    seed_lookup(reactor, server)      -> () -> Deferred[[(host, port)]]   live trackers, from seed.orb SRV
    lookup_srv(reactor, server, name) -> Deferred[[Target]]               SRV targets, in answer order
    resolve(reactor, server, name)    -> Deferred[dict]                   A, AAAA, TXT and SRV of a name
"""

import attrs
from twisted.internet import defer
from twisted.names import client, dns
from twisted.names import error as dns_error

from orb.dns import names as nm
from orb.dns.names import Kind

TIMEOUTS_S = (1, 3)  # UDP attempts; the whole lookup gives up after their sum
MAX_TARGETS = 16


@attrs.frozen
class Target:
    """One SRV record, its target's addresses (from the additional section, or asked), and the node id
    that a ``<node>.peer.orb`` or ``<node>.tracker.orb`` target names."""

    priority: int
    weight: int
    port: int
    target: str
    addresses: tuple = ()
    node_id: bytes | None = None


def resolver(reactor, server):
    """A twisted.names client for one server (host, port); it reads no resolv.conf."""
    return client.Resolver(servers=[server], reactor=reactor)


def _text(name):
    return name.name.decode("ascii", "replace") if hasattr(name, "name") else str(name)


def _addresses(records, owner):
    out = []
    for rr in records:
        if rr.type in (dns.A, dns.AAAA) and _text(rr.name).lower().rstrip(".") == owner:
            out.append(rr.payload.dottedQuad() if rr.type == dns.A else _aaaa(rr.payload))
    return out


def _aaaa(payload):
    import socket

    return socket.inet_ntop(socket.AF_INET6, payload.address)


@defer.inlineCallbacks
def lookup_srv(reactor, server, name, res=None):
    """The SRV records of ``name`` in answer order (the server's "best first"), each with its target's
    addresses. An NXDOMAIN or an empty answer is an empty list."""
    res = res or resolver(reactor, server)
    try:
        answers, _authority, additional = yield res.lookupService(name, timeout=TIMEOUTS_S)
    except dns_error.DNSNameError:
        return []
    targets = []
    for rr in answers:
        if rr.type != dns.SRV or len(targets) >= MAX_TARGETS:
            continue
        target = _text(rr.payload.target).lower().rstrip(".")
        addresses = _addresses(additional, target)
        if not addresses:
            addresses = yield _lookup_addresses(res, target)
        parsed = nm.classify(target)
        targets.append(Target(rr.payload.priority, rr.payload.weight, rr.payload.port, target, tuple(addresses),
                              parsed.node_id if parsed.kind in (Kind.PEER, Kind.TRACKER) else None))
    return targets


@defer.inlineCallbacks
def _lookup_addresses(res, name):
    out = []
    for lookup in (res.lookupAddress, res.lookupIPV6Address):
        try:
            answers, _, _ = yield lookup(name, timeout=TIMEOUTS_S)
        except (dns_error.DomainError, defer.TimeoutError):
            continue
        out += _addresses(answers, name)
    return out


def seed_lookup(reactor, server):
    """The peer's ``seed_lookup`` hook (orb.peer.connections): the trackers that ``seed.orb`` lists at
    ``server``, as (host, port) of their wire listeners."""

    @defer.inlineCallbacks
    def lookup():
        targets = yield lookup_srv(reactor, server, "_orb._tcp.seed.orb")
        return [(host, t.port) for t in targets for host in t.addresses[:1]]

    return lookup


@defer.inlineCallbacks
def resolve(reactor, server, name):
    """A, AAAA, TXT (and SRV, where the name has one) of ``name``: a JSON-ready dict.
    ``status`` is ``ok``, or ``nxdomain`` when the server knows no such name."""
    res = resolver(reactor, server)
    name = name.rstrip(".")
    host = f"[{server[0]}]" if ":" in server[0] else server[0]
    doc = {"name": name, "server": f"{host}:{server[1]}", "status": "ok", "a": [], "aaaa": [], "txt": [],
           "srv": [], "srv_name": None}
    parsed = nm.classify(name)
    try:
        answers, _, _ = yield res.lookupAddress(name, timeout=TIMEOUTS_S)
        doc["a"] = [rr.payload.dottedQuad() for rr in answers if rr.type == dns.A]
        answers, _, _ = yield res.lookupIPV6Address(name, timeout=TIMEOUTS_S)
        doc["aaaa"] = [_aaaa(rr.payload) for rr in answers if rr.type == dns.AAAA]
        answers, _, _ = yield res.lookupText(name, timeout=TIMEOUTS_S)
        doc["txt"] = [[s.decode("utf-8", "replace") for s in rr.payload.data] for rr in answers if rr.type == dns.TXT]
    except dns_error.DNSNameError:
        doc["status"] = "nxdomain"
        return doc
    srv_name = {Kind.FUNCTION: f"_orb._tcp.{name}", Kind.SEED: name, Kind.SEED_SRV: name,
                Kind.FUNCTION_SRV: name}.get(parsed.kind)
    if srv_name:
        doc["srv_name"] = srv_name
        targets = yield lookup_srv(reactor, server, srv_name, res)
        doc["srv"] = [{"priority": t.priority, "weight": t.weight, "port": t.port, "target": t.target,
                       "addresses": list(t.addresses), "node_id": t.node_id.hex() if t.node_id else None}
                      for t in targets]
    return doc
