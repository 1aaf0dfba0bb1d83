# -*- test-case-name: tests.test_tracker_http -*-
"""
The tracker's HTTP side: REST analytics API, Prometheus metrics, dashboard.

``build_resource(registry, stats)`` returns the root ``Resource``:

=====================  ======================================================
``/``                  dashboard (static HTML + JS, polls the API)
``/dashboard.js``,     its script and style sheet
``/style.css``
``/api/v1/peers``      live peers (``?limit=&offset=``, sorted by id)
``/api/v1/peers/<id>`` one peer by 64-hex-digit node id (400 if malformed)
``/api/v1/trackers``   known trackers, with liveness
``/api/v1/functions``  functions (``?owner=<64 hex>``: one owner's), each with
                       its manifest's name, version and runtime, size, deploy
                       time, owner, and the peers hosting it, best first
                       (``orb.tracker.routing.rank_replicas``), and
                       ``calls``: call rate, p50/p99 latency, error rate
``/api/v1/functions/<fid>``
                       one function: its manifest, its placement (the
                       managing tracker) and every replica with its address,
                       network group, RTT and last passed integrity check,
                       and ``deprecation`` (null, or deprecated, successor,
                       sunset, gone, seq); 400 for a malformed fid, 404 for an
                       unknown one, 410 (with ``deprecation``) past its sunset
``/api/v1/names/<owner>/<name>``
                       a name (RFC 9.10): the fid of its newest NAME record,
                       its seq, the fid it serves, its status (``current``,
                       ``deprecated``, ``gone``) and its history: every seq
                       with its fid, that version's status (``current``,
                       ``superseded``, ``deprecated``, ``gone``), successor,
                       sunset and when this tracker took it in; 400 for a
                       malformed owner label or name, 404 for an unknown one
``/api/v1/stats``      counts, message totals and rates, uptime
``/metrics``           Prometheus text exposition format 0.0.4, with each
                       function's calls, errors, call rate, error ratio
                       and p50/p99 latency
``/f/<fid>``,          the HTTP gateway (orb.tracker.gateway)
``/n/<owner>/<name>``
=====================  ======================================================

``build_site(registry, stats, router, reactor, config)`` is the whole
``Site``: these resources and the gateway's request bounds and Host routing.

Everything under ``/api`` answers JSON, errors included:
``{"error": "<code>", "message": "..."}`` with the matching status.  The
adapter is read-only: only GET and HEAD are allowed.
"""

from __future__ import annotations

import collections
import ipaddress
import json
import math
import os
from typing import Any

from eth_utils import to_checksum_address
from twisted.logger import Logger
from twisted.web import http
from twisted.web.resource import Resource

from orb.protocol import fid as fidmod
from orb.protocol.addresses import AddressError, node_id_from_hex
from orb.protocol.federation import FunctionRecord
from orb.dns import names as dnsnames
from orb.tracker.gateway import (ConnectionLimit, GatewayConfig, GatewayResource, GatewaySite, deprecation_json,
                                 parse_name, private_view, proven_key)
from orb.tracker.registry import MAX_PEERS, PeerRecord, Registry
from orb.tracker.replication import placement_group, verified_replicas
from orb.tracker.routing import rank_replicas
from orb.tracker.stats import Stats

log = Logger()

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
STATIC_FILES = {
    b"": ("index.html", b"text/html; charset=utf-8"),
    b"index.html": ("index.html", b"text/html; charset=utf-8"),
    b"dashboard.js": ("dashboard.js", b"text/javascript; charset=utf-8"),
    b"style.css": ("style.css", b"text/css; charset=utf-8"),
}
DEFAULT_PAGE_SIZE = 1000
CSP = b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:"
JSON_TYPE = b"application/json"
METRICS_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


def _common_headers(request: Any) -> None:
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    request.setHeader(b"Cache-Control", b"no-store")


def json_body(request: Any, obj: Any, status: int = http.OK) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", JSON_TYPE)
    _common_headers(request)
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")


def json_error(request: Any, status: int, code: str, message: str) -> bytes:
    return json_body(request, {"error": code, "code": code, "message": message}, status)


class _Json(Resource):
    """A GET-only JSON resource; subclasses implement ``get(request)``."""

    isLeaf = True

    def render(self, request: Any) -> bytes:
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"Allow", b"GET, HEAD")
            return json_error(request, http.NOT_ALLOWED, "method-not-allowed", "this API is read-only")
        try:
            return self.get(request)
        except _BadRequest as e:
            return json_error(request, http.BAD_REQUEST, e.code, str(e))
        except Exception:
            log.failure("HTTP {uri} failed", uri=getattr(request, "uri", b"?")[:200])
            return json_error(request, http.INTERNAL_SERVER_ERROR, "internal", "internal error")

    def get(self, request: Any) -> bytes:
        raise NotImplementedError


class _BadRequest(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class JsonError(_Json):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__()
        self.status, self.code, self.message = status, code, message

    def render(self, request: Any) -> bytes:
        return json_error(request, self.status, self.code, self.message)


def not_found(what: str = "no such resource") -> JsonError:
    return JsonError(http.NOT_FOUND, "not-found", what)


def _int_arg(request: Any, name: bytes, default: int, lo: int, hi: int) -> int:
    values = request.args.get(name)
    if not values:
        return default
    raw = values[0]
    try:
        v = int(raw.decode("ascii"), 10)
    except (UnicodeDecodeError, ValueError):
        raise _BadRequest("bad-query", f"{name.decode()} must be an integer") from None
    if not lo <= v <= hi:
        raise _BadRequest("bad-query", f"{name.decode()} must be between {lo} and {hi}")
    return v


def parse_node_id(segment: bytes) -> bytes | None:
    """A node id from a path segment (64 hex digits, either case), or None."""
    try:
        return node_id_from_hex(segment.decode("ascii").lower())
    except (UnicodeDecodeError, AddressError):
        return None


def _round(v: float | None, digits: int = 3) -> float | None:
    if v is None or not math.isfinite(v):
        return None
    return round(v, digits)


def peer_json(registry: Registry, p: PeerRecord) -> dict:
    now = registry.now()
    seen = registry.peer_last_seen(p.node_id)
    return {
        "node_id": p.node_id.hex(),
        "home": p.home.hex(),
        "home_is_here": p.home == registry.tracker_id,
        "addresses": [{"ip": ip, "port": port} for ip, port in p.addresses],
        "reachability": p.reachability,
        "rtt_ms": p.rtt_ms,
        "load_permille": p.load_permille,
        "functions": p.function_map,
        "roles": p.roles,
        "last_seen_s": _round(seen),
        "age_s": None if seen is None else _round(max(0.0, now - seen)),
        "statement": {"seq": str(p.seq), "time": p.time, "age_s": _round(max(0.0, now - p.time))},
        "connected": p.connected,
    }


class PeersResource(_Json):
    isLeaf = False

    def __init__(self, registry: Registry) -> None:
        super().__init__()
        self.registry = registry

    def getChild(self, path: bytes, request: Any) -> Resource:
        if path == b"":
            return self
        node_id = parse_node_id(path)
        if node_id is None:
            return JsonError(http.BAD_REQUEST, "bad-id", "a peer id is 64 hexadecimal digits")
        if len(request.postpath) > 0 and request.postpath != [b""]:
            return not_found()
        peer = self.registry.peer(node_id)
        if peer is None:
            return not_found(f"no live peer {path.decode('ascii')}")
        return PeerResource(self.registry, peer)

    def get(self, request: Any) -> bytes:
        limit = _int_arg(request, b"limit", DEFAULT_PAGE_SIZE, 1, MAX_PEERS)
        offset = _int_arg(request, b"offset", 0, 0, MAX_PEERS)
        peers = sorted(self.registry.peers(), key=lambda p: p.node_id)
        page = peers[offset : offset + limit]
        return json_body(
            request,
            {
                "total": len(peers),
                "offset": offset,
                "limit": limit,
                "peers": [peer_json(self.registry, p) for p in page],
            },
        )


class PeerResource(_Json):
    def __init__(self, registry: Registry, peer: PeerRecord) -> None:
        super().__init__()
        self.registry, self.peer = registry, peer

    def get(self, request: Any) -> bytes:
        return json_body(request, peer_json(self.registry, self.peer))


class TrackersResource(_Json):
    def __init__(self, registry: Registry) -> None:
        super().__init__()
        self.registry = registry

    def get(self, request: Any) -> bytes:
        reg = self.registry
        now = reg.now()
        homed = collections.Counter(p.home for p in reg.peers())
        out = []
        for t in sorted(reg.trackers(), key=lambda t: t.node_id):
            seen = float(t.time)  # its latest signed statement
            is_self = t.node_id == reg.tracker_id
            out.append(
                {
                    "node_id": t.node_id.hex(),
                    "addresses": [{"ip": ip, "port": port} for ip, port in t.addresses],
                    "gateways": [{"ip": ip, "port": port} for ip, port in t.gateways],
                    "eth_signer": to_checksum_address(t.eth_signer) if t.eth_signer else None,
                    "self": is_self,
                    "connected": is_self or reg.tracker_connected(t.node_id),
                    "last_seen_s": _round(seen),
                    "age_s": None if seen is None else _round(max(0.0, now - seen)),
                    "peers": homed[t.node_id],
                }
            )
        return json_body(request, {"self": reg.tracker_id.hex(), "total": len(out), "trackers": out})


def network_group(ip: str) -> str | None:
    """The network group replicas are spread over (``replication.placement_group``), as a prefix:
    ``127.2.0.0/16`` for IPv4, ``2001:db8::/32`` for IPv6; None for no usable address."""
    try:
        group = placement_group(ip)
    except (AddressError, ValueError):
        return None
    if isinstance(group, tuple):
        return f"{group[0]}.{group[1]}.0.0/16"
    return str(ipaddress.IPv6Network((bytes(group) + bytes(16 - len(group)), 8 * len(group))))


def _hosts_by_fid(reg: Registry) -> dict[str, list[PeerRecord]]:
    """The live peers whose own signed statement lists each fid."""
    hosts: dict[str, list[PeerRecord]] = {}
    for p in reg.peers():
        for fid, _ in p.functions:
            hosts.setdefault(fid, []).append(p)
    return hosts


def _replicas(reg: Registry, f: FunctionRecord, announced: list[PeerRecord]) -> list[dict]:
    """Every host of ``f``: those of its placement (the manager's statement, with the time of each
    host's last passed integrity challenge), then peers announcing it that the placement does not
    list yet. ``live``: the host's own record is live and, for a peer, lists the fid."""
    placement = reg.placement(f.fid)
    by_id = {p.node_id: p for p in announced}
    out = []
    placed = dict(placement.hosts) if placement is not None else {}
    ranked = rank_replicas(announced)
    order = [p.node_id for p in ranked if p.node_id in placed] + sorted(n for n in placed if n not in by_id)
    order += [p.node_id for p in ranked if p.node_id not in placed]
    for node_id in order:
        peer = reg.peer(node_id)
        tracker = reg.tracker(node_id) if peer is None else None
        record = peer or tracker
        addresses = [{"ip": ip, "port": port} for ip, port in record.addresses] if record is not None else []
        verified_at = placed.get(node_id) or None
        live = node_id in by_id or tracker is not None
        out.append(
            {
                "node_id": node_id.hex(),
                "is_tracker": tracker is not None,
                "is_this_tracker": node_id == reg.tracker_id,
                "in_placement": node_id in placed,
                "live": live,
                "verified": live and verified_at is not None,
                "verified_at": verified_at,
                "address": addresses[0] if addresses else None,
                "addresses": addresses,
                "network_group": network_group(addresses[0]["ip"]) if addresses else None,
                "rtt_ms": peer.rtt_ms if peer is not None else None,
                "load_permille": peer.load_permille if peer is not None else None,
                "reachability": peer.reachability if peer is not None else "reachable" if addresses else "unknown",
            }
        )
    return out


def function_json(reg: Registry, f: FunctionRecord, announced: list[PeerRecord], stats: Stats | None = None,
                  names: Any = None) -> dict:
    """What /api/v1/functions lists for one function; with ``stats``, its call figures (``calls``); with
    ``names`` (the names core), its ``deprecation``."""
    manifest = f.manifest_json()
    placement = reg.placement(f.fid)
    hosts = rank_replicas(announced)
    verified = set(placement.verified) if placement is not None else set()
    verified_peers = verified_replicas(reg, f.fid, hosts)
    return {
        "fid": f.fid,
        "name": manifest["name"],
        "version": f.version,
        "runtime": manifest["runtime"],
        "owner": f.owner.hex(),
        "package_size": f.package_size,
        "deployed_at": f.issued_at,
        "replicas": f.replicas,
        "live_replicas": len(hosts),
        "verified_replicas": len(verified_peers),
        "tracker_hosts": placement is not None and placement.tracker in verified,
        "manager": placement.tracker.hex() if placement is not None else None,
        "hosted_by": [p.node_id.hex() for p in hosts],
        **({"calls": stats.calls.figures(f.fid).to_json()} if stats is not None else {}),
        **({"deprecation": deprecation_json(names.fid_status(f.fid))} if names is not None else {}),
    }


class FunctionsResource(_Json):
    isLeaf = False

    def __init__(self, registry: Registry, stats: Stats | None = None, names: Any = None) -> None:
        super().__init__()
        self.registry = registry
        self.stats = stats
        self.names = names

    def getChild(self, path: bytes, request: Any) -> Resource:
        if path == b"":
            return self
        secrets = request.postpath == [b"secrets"]  # /api/v1/functions/<fid>/secrets (RFC 9.12)
        if len(request.postpath) > 0 and request.postpath != [b""] and not secrets:
            return not_found()
        try:
            fid = path.decode("ascii")
            fidmod.check(fidmod.from_text(fid))
        except (UnicodeDecodeError, fidmod.FidError):
            return JsonError(http.BAD_REQUEST, "bad-fid", "a fid is 53 lowercase base32 characters (orb hash prints it)")
        function = self.registry.function(fid)
        status = self.names.fid_status(fid) if self.names is not None else None
        if status is not None and status.gone:
            return JsonDoc(http.GONE, {"error": "gone", "code": "gone", "fid": fid, "deprecation": deprecation_json(status),
                                       "message": f"function {fid} is past its sunset"})
        if function is None:
            return not_found(f"no function {fid} is known to this tracker")
        if secrets:
            request.postpath.clear()
            return SecretsResource(self.registry, fid)
        return FunctionResource(self.registry, function, self.stats, self.names)

    def get(self, request: Any) -> bytes:
        reg = self.registry
        owner = None
        values = request.args.get(b"owner")
        if values:
            owner = parse_node_id(values[0])  # an owner key is 32 bytes, written as 64 hex digits too
            if owner is None:
                raise _BadRequest("bad-query", "owner must be an owner's public key: 64 hexadecimal digits")
        hosts = _hosts_by_fid(reg)
        out = [
            function_json(reg, f, hosts.get(f.fid, []), self.stats, self.names)
            for f in sorted(reg.functions(), key=lambda f: f.fid)
            if (owner is None or f.owner == owner) and not is_private(f)  # private functions are not listed (RFC 10.9)
        ]
        return json_body(request, {"total": len(out), "functions": out})


def is_private(f: FunctionRecord) -> bool:
    return f.manifest_json().get("visibility", "public") != "public"


def _proves_owner(request: Any, f: FunctionRecord, now: float) -> bool:
    """The request carries a valid Orb-Signature proof of the owner's key (RFC 10.9)."""
    try:
        return proven_key(request, b"", int(now)) == f.owner
    except ValueError:
        return False


class FunctionResource(_Json):
    def __init__(self, registry: Registry, function: FunctionRecord, stats: Stats | None = None,
                 names: Any = None) -> None:
        super().__init__()
        self.registry, self.function, self.stats, self.names = registry, function, stats, names

    def get(self, request: Any) -> bytes:
        reg, f = self.registry, self.function
        if is_private(f) and not _proves_owner(request, f, reg.now()):
            return json_body(request, private_view(f))
        announced = _hosts_by_fid(reg).get(f.fid, [])
        placement = reg.placement(f.fid)
        doc = function_json(reg, f, announced, self.stats, self.names)
        doc.setdefault("deprecation", None)
        doc["manifest"] = f.manifest_json()
        doc["placement"] = None if placement is None else {
            "tracker": placement.tracker.hex(), "seq": str(placement.seq), "time": placement.time}
        doc["hosts"] = _replicas(reg, f, announced)
        from orb.tracker.secrets import secret_summary

        doc["secrets"] = secret_summary(reg, f.fid)  # which hosts hold sealed secrets, which wait (RFC 9.12)
        return json_body(request, doc)


class SecretsResource(_Json):
    """Which hosts of a function hold its sealed secrets and which wait for them (never a secret)."""

    def __init__(self, registry: Registry, fid: str) -> None:
        super().__init__()
        self.registry, self.fid = registry, fid

    def get(self, request: Any) -> bytes:
        from orb.tracker.secrets import secret_status

        return json_body(request, secret_status(self.registry, self.fid))


def version_status(version: Any, serving: str | None) -> str:
    """What a version in a name's history is now: ``gone`` past its sunset, ``deprecated`` (by its NAME
    record or its fid's DEPRECATE), ``current`` (the version the name serves) or ``superseded`` (a newer
    version serves; this one still answers at /f/<fid> until its owner deprecates it)."""
    if version.gone:
        return "gone"
    if version.deprecated:
        return "deprecated"
    return "current" if version.fid == serving else "superseded"


def name_json(names: Any, owner_label: str, name: str) -> dict | None:
    """What /api/v1/names/<owner>/<name> answers, or None for an unknown name."""
    view = names.resolve(owner_label, name)
    if view is None:
        return None
    serving = view.serving
    history = [{"seq": int(v.seq), "fid": v.fid, "status": version_status(v, serving),
                "successor": v.successor or None, "sunset": int(v.sunset) or None,
                "received_at": _round(v.received_at) or None}  # when this tracker took the NAME in
               for v in view.versions]
    serving_version = next((v for v in view.versions if v.fid == serving), None)
    state = "gone" if serving is None else "deprecated" if serving_version is not None and serving_version.deprecated \
        else "current"
    return {
        "owner": view.owner_key.hex(),
        "owner_label": owner_label,
        "name": name,
        "dns_name": dnsnames.named_name(name, owner_label),
        "call": f"/n/{owner_label}/{name}",
        "fid": view.fid,
        "seq": int(view.seq),
        "serving": serving,
        "status": state,
        "deprecation": deprecation_json(names.fid_status(serving)) if serving is not None else None,
        "history": history,
    }


class NamesResource(_Json):
    """``/api/v1/names/<owner>/<name>``: a name and its history (RFC 9.10)."""

    def __init__(self, names: Any) -> None:
        super().__init__()
        self.names = names

    def get(self, request: Any) -> bytes:
        parts = [p for p in request.postpath if p]
        if len(parts) != 2:
            return json_error(request, http.NOT_FOUND, "not-found", "a name is /api/v1/names/<owner>/<name>")
        named = parse_name(*parts)
        if named is None:
            return json_error(request, http.BAD_REQUEST, "bad-name",
                              "an owner label is 32 lowercase base32 characters and a name one DNS label")
        doc = name_json(self.names, *named) if self.names is not None else None
        if doc is None:
            return json_error(request, http.NOT_FOUND, "name-not-found",
                              f"no NAME record for {named[1]} of owner {named[0]} is known to this tracker")
        return json_body(request, doc)


class JsonDoc(_Json):
    def __init__(self, status: int, doc: dict) -> None:
        super().__init__()
        self.status, self.doc = status, doc

    def render(self, request: Any) -> bytes:
        return json_body(request, self.doc, self.status)


class StatsResource(_Json):
    def __init__(self, registry: Registry, stats: Stats) -> None:
        super().__init__()
        self.registry, self.stats = registry, stats

    def get(self, request: Any) -> bytes:
        reg, st = self.registry, self.stats
        reach = {"reachable": 0, "relayed": 0, "unknown": 0}
        rtts = []
        for p in reg.peers():
            reach[p.reachability] = reach.get(p.reachability, 0) + 1
            if p.rtt_ms is not None:
                rtts.append(p.rtt_ms)
        rtts.sort()
        return json_body(
            request,
            {
                "tracker_id": reg.tracker_id.hex(),
                "started_at_s": _round(st.started_at_s),
                "uptime_s": _round(st.uptime_s()),
                "counts": reg.counts(),
                "reachability": reach,
                "rtt_ms": {
                    "peers_measured": len(rtts),
                    "median": _round(rtts[len(rtts) // 2]) if rtts else None,
                    "max": _round(rtts[-1]) if rtts else None,
                },
                "messages": st.messages_by_direction(),
                "rates_per_s": st.rates_per_s(),
                "eth_signer": getattr(st, "eth_signer", None),  # the voucher signer (RFC 10.10), None: no payments
                # canaries sent, passed, wrong; the suspect hosts with the reason and until when (RFC 10.10.1)
                "spot_checks": st.spot_checks() if getattr(st, "spot_checks", None) else None,
                # calls counted, self/unauthorized calls ignored, vouchers signed, escrow reads (RFC 10.10)
                "payments": st.payments() if getattr(st, "payments", None) else None,
            },
        )


def _label(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(v: float) -> str:
    if v == math.inf:
        return "+Inf"
    if float(v).is_integer():
        return str(int(v))
    return repr(float(v))


def render_metrics(registry: Registry, stats: Stats) -> str:
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, dict, float]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for suffix, labels, value in samples:
            lab = ",".join(f'{k}="{_label(str(v))}"' for k, v in labels.items())
            lines.append(f"{name}{suffix}{{{lab}}} {_num(value)}" if lab else f"{name}{suffix} {_num(value)}")

    counts = registry.counts()
    metric("orb_peers", "gauge", "Live peers in the registry.", [("", {}, counts["peers"])])
    reach: dict[str, int] = {"reachable": 0, "relayed": 0, "unknown": 0}
    for p in registry.peers():
        reach[p.reachability] = reach.get(p.reachability, 0) + 1
    metric(
        "orb_peers_by_reachability",
        "gauge",
        "Live peers by reachability.",
        [("", {"reachability": k}, v) for k, v in sorted(reach.items())],
    )
    metric("orb_trackers", "gauge", "Trackers in the registry.", [("", {}, counts["trackers"])])
    metric("orb_functions", "gauge", "Functions in the registry.", [("", {}, counts["functions"])])
    metric(
        "orb_registry_changes_logged",
        "gauge",
        "Entries in the federation change log.",
        [("", {}, counts["changes_logged"])],
    )
    totals = stats.message_totals()
    metric(
        "orb_messages_total",
        "counter",
        "Protocol messages by direction and type.",
        [("", {"direction": d, "type": t}, n) for (d, t), n in sorted(totals.items())],
    )
    metric(
        "orb_message_bytes_total",
        "counter",
        "Protocol message bytes by direction and type.",
        [("", {"direction": d, "type": t}, n) for (d, t), n in sorted(stats.byte_totals().items())],
    )
    metric("orb_uptime_seconds", "gauge", "Seconds since the tracker started.", [("", {}, round(stats.uptime_s(), 3))])
    hist = [("_bucket", {"le": _num(bound)}, n) for bound, n in stats.rtt_histogram()]
    hist.append(("_sum", {}, round(stats.rtt_sum_ms, 3)))
    hist.append(("_count", {}, stats.rtt_count))
    metric("orb_peer_rtt_ms", "histogram", "PING/PONG round-trip times to peers, in milliseconds.", hist)
    figures = [(fid, stats.calls.figures(fid)) for fid in sorted(stats.calls.fids())]
    metric("orb_function_calls_total", "counter", "Calls answered, by function.",
           [("", {"fid": fid}, f.calls_total) for fid, f in figures])
    metric("orb_function_errors_total", "counter", "Calls that did not end OK, by function.",
           [("", {"fid": fid}, f.errors_total) for fid, f in figures])
    metric("orb_function_calls_per_second", "gauge", "Calls per second over the last minute, by function.",
           [("", {"fid": fid}, f.rate_per_s) for fid, f in figures])
    metric("orb_function_error_ratio", "gauge", "Share of the last minute's calls that did not end OK.",
           [("", {"fid": fid}, f.error_rate) for fid, f in figures if f.error_rate is not None])
    metric("orb_function_latency_ms", "gauge", "Call latency quantiles over the last minute, in milliseconds.",
           [("", {"fid": fid, "quantile": q}, v) for fid, f in figures
            for q, v in (("0.5", f.p50_ms), ("0.99", f.p99_ms)) if v is not None])
    return "\n".join(lines) + "\n"


class MetricsResource(Resource):
    isLeaf = True

    def __init__(self, registry: Registry, stats: Stats) -> None:
        super().__init__()
        self.registry, self.stats = registry, stats

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"Content-Type", METRICS_TYPE)
        _common_headers(request)
        return render_metrics(self.registry, self.stats).encode("utf-8")

    def render(self, request: Any) -> bytes:
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"Allow", b"GET, HEAD")
            return json_error(request, http.NOT_ALLOWED, "method-not-allowed", "read-only")
        return self.render_GET(request)


class StaticFile(Resource):
    """One file of the dashboard, read once at start-up."""

    isLeaf = True

    def __init__(self, body: bytes, content_type: bytes) -> None:
        super().__init__()
        self.body, self.content_type = body, content_type

    def render(self, request: Any) -> bytes:
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"Allow", b"GET, HEAD")
            return json_error(request, http.NOT_ALLOWED, "method-not-allowed", "read-only")
        request.setHeader(b"Content-Type", self.content_type)
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        request.setHeader(b"Content-Security-Policy", CSP)
        request.setHeader(b"Cache-Control", b"no-cache")
        return self.body


class _Dir(Resource):
    """A node whose unknown children are JSON 404s."""

    def getChild(self, path: bytes, request: Any) -> Resource:
        if path == b"" and b"" in self.children:
            return self.children[b""]
        return not_found()

    def render(self, request: Any) -> bytes:
        return json_error(request, http.NOT_FOUND, "not-found", "no such resource")


def build_resource(registry: Registry, stats: Stats, static_dir: str = STATIC_DIR, router: Any = None,
                   gateway: Any = None, clock: Any = None, names: Any = None) -> Resource:
    """The root resource. ``gateway`` (a ``GatewayResource``) serves ``/f/`` and ``/n/``; given only
    ``router``, a gateway with the default limits is made for it. ``names``: the tracker's names core."""
    root = _Dir()
    if gateway is None and router is not None:
        gateway = make_gateway(registry, stats, router, clock if clock is not None else _reactor(), names=names)
    if gateway is not None:
        root.putChild(b"f", gateway)
        root.putChild(b"n", gateway)
    for name, (filename, ctype) in STATIC_FILES.items():
        with open(os.path.join(static_dir, filename), "rb") as f:
            root.putChild(name, StaticFile(f.read(), ctype))
    api = _Dir()
    v1 = _Dir()
    root.putChild(b"api", api)
    api.putChild(b"v1", v1)
    v1.putChild(b"peers", PeersResource(registry))
    v1.putChild(b"trackers", TrackersResource(registry))
    v1.putChild(b"functions", FunctionsResource(registry, stats, names))
    v1.putChild(b"names", NamesResource(names))
    v1.putChild(b"stats", StatsResource(registry, stats))
    root.putChild(b"metrics", MetricsResource(registry, stats))
    return root


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


def make_gateway(registry: Registry, stats: Stats, router: Any, clock: Any,
                 config: GatewayConfig = GatewayConfig(), names: Any = None) -> GatewayResource:
    """The gateway at ``/f/``: calls through ``router``, figures into ``stats.calls``; its GET adds the
    replicas the functions API lists."""
    def replicas(function: FunctionRecord) -> dict:
        announced = _hosts_by_fid(registry).get(function.fid, [])
        doc = function_json(registry, function, announced)
        return {k: doc[k] for k in ("replicas", "live_replicas", "verified_replicas", "hosted_by")}

    return GatewayResource(clock, registry, router, stats.calls, config, metadata=replicas, names=names)


def build_site(registry: Registry, stats: Stats, router: Any, reactor: Any,
               config: GatewayConfig = GatewayConfig(), static_dir: str = STATIC_DIR,
               names: Any = None) -> ConnectionLimit:
    """The tracker's whole HTTP site (a factory to listen with): API, /metrics, dashboard and the gateway,
    with its bounds. ``names``: the tracker's names core (orb.tracker.names), or None."""
    gateway = make_gateway(registry, stats, router, reactor, config, names=names)
    return ConnectionLimit(GatewaySite(build_resource(registry, stats, static_dir, gateway=gateway, names=names),
                                       gateway, reactor))
