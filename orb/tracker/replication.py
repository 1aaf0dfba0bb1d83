# -*- test-case-name: tests.test_replication -*-
"""
A function's replicas, at the tracker that manages it (RFC 9.4-9.6).

Manager.  Every function has one managing tracker: the tracker named in its
current placement record while that tracker is live (its own signed record
is fresh), else the *home* by rendezvous hashing: of the live trackers, the
one with the greatest SHA-256(fid bytes || node id).  The tracker that
accepts a DEPLOY writes the first placement, so it manages the function
until it dies; then every tracker computes the same successor, which takes
over by signing a placement of its own (its seq, from its clock, is newer).

Keeping k replicas.  Every TICK_S the manager of each function:

* counts its hosts: the peers in its placement that are live here and whose
  own signed statement lists the fid;
* challenges a host that has not passed a challenge yet (CHALLENGE with a
  fresh nonce, PROOF = SHA-256(nonce || package)); a passed challenge stamps
  the host's ``verified_at``; a verified host is challenged again at a
  random time CHALLENGE_MIN_S..CHALLENGE_MAX_S later;
* offers the function to more peers while fewer than k are hosting or have
  accepted an offer: live peers with a session here, not hosting it, not in
  the penalty box, spread over distinct network groups (IPv4 /16, IPv6 /32)
  first, the least loaded and nearest first;
* hosts the function itself when no peer can (proposal 3.1.1 II), and
  drops itself from the placement once k peers are verified.

A wrong PROOF, or none within CHALLENGE_TIMEOUT_S, drops the host from the
placement and keeps it out of offers for PENALTY_S.  ERROR(not_found) to a
CHALLENGE (an honest peer that found its own copy bad) only drops it.
"""

import hashlib
import os
import random

from orb.net.logs import orb_logger
from orb.protocol import fid as fidmod
from orb.protocol import messages as m
from orb.protocol.addresses import check_ip
from orb.protocol.codes import ErrorCode, Role, TlvType
from orb.protocol.federation import MAX_REPLICAS
from orb.protocol.messages import MessageType
from orb.tracker.routing import rank_replicas

log = orb_logger()

TICK_S = 0.5
CHALLENGE_TIMEOUT_S = 30.0
CHALLENGE_MIN_S = 60.0
CHALLENGE_MAX_S = 180.0
OFFER_TIMEOUT_S = 60.0  # an accepted offer not followed by an ANNOUNCE of the fid within this is given up
PENALTY_S = 600.0
MAX_PENALTIES = 10_000
MAX_OFFERS_PER_TICK = 64
DEFAULT_LOOKUP_REPLICAS = 3


def home_of(fid_raw, tracker_ids):
    """Rendezvous hashing: the tracker id with the greatest SHA-256(fid || id)."""
    return max(tracker_ids, key=lambda t: hashlib.sha256(fid_raw + t).digest(), default=None)


def placement_group(ip):
    """The network group replicas are spread over: IPv4 /16, IPv6 /32
    (loopback and private ranges too, so that 127.1.x and 127.2.x differ)."""
    ip = check_ip(ip)
    if ":" in ip:
        import ipaddress

        return ipaddress.IPv6Address(ip).packed[:4]
    return tuple(ip.split(".")[:2])


def verified_replicas(registry, fid, hosts=None):
    """The one rule for a replica that counts: a host in ``fid``'s placement with a passed
    challenge, whose own live statement lists ``fid`` (``hosts``: those peers, if known)."""
    placement = registry.placement(fid)
    if placement is None:
        return []
    verified = set(placement.verified)
    if hosts is None:
        hosts = [p for p in registry.peers() if fid in p.function_map]
    return [p for p in hosts if p.node_id in verified]


def place(candidates, wanted, taken_groups, group_of=placement_group):
    """Up to ``wanted`` peers from ``candidates`` (PeerRecords that may host):
    first one per network group not in ``taken_groups``, best ranked first;
    then, if groups run out, the best of the rest."""
    chosen, groups = [], set(taken_groups)
    ranked = rank_replicas(candidates)
    for peer in ranked:
        if len(chosen) >= wanted:
            return chosen
        group = group_of(peer.addresses[0][0]) if peer.addresses else None
        if group is not None and group not in groups:
            chosen.append(peer)
            groups.add(group)
    for peer in ranked:
        if len(chosen) >= wanted:
            break
        if peer not in chosen:
            chosen.append(peer)
    return chosen


class Replication:
    def __init__(self, clock, local, table, registry, packages, rng=None, group_of=placement_group,
                 challenge_max_s=CHALLENGE_MAX_S, fetcher=None):
        self.clock = clock
        self.local = local
        self.table = table
        self.registry = registry
        self.packages = packages  # orb.net.packages.PackageStore: get(fid), proof(fid, nonce)
        self.rng = rng or random.Random()
        self.group_of = group_of
        self.fetcher = fetcher  # a new manager fetches the package from a verified replica (RFC 9.4)
        self.challenge_min_s = challenge_max_s * CHALLENGE_MIN_S / CHALLENGE_MAX_S
        self.challenge_max_s = challenge_max_s
        self._offers = {}  # (fid, peer id) -> when the peer accepted
        self._verified = {}  # (fid, peer id) -> when it last passed a challenge here
        self._next_challenge = {}  # (fid, peer id) -> when to challenge it again
        self._challenging = set()  # (fid, peer id) with a CHALLENGE in flight
        self._penalty = {}  # peer id -> until
        self._self_since = {}  # fid -> since when we host it ourselves
        self._kicked = set()  # fids to manage at once, not at the next tick
        self.is_gone = lambda fid: False  # past its owner's sunset (RFC 9.10): set by the wiring (Names)
        registry.watch(self._changed)

    def handlers(self):
        return {MessageType.LOOKUP: self.on_lookup}

    def _holds(self, raw):
        return self.packages is not None and self.packages.get(raw) is not None

    # --- who manages what -------------------------------------------------------------

    def live_trackers(self):
        return [t.node_id for t in self.registry.trackers()]

    def manager_of(self, fid):
        placement = self.registry.placement(fid)
        live = self.live_trackers()
        if placement is not None and placement.tracker in live:
            return placement.tracker
        return home_of(fidmod.from_text(fid), live or [self.local.node_id])

    def managed(self):
        return [f for f in self.registry.functions() if self.manager_of(f.fid) == self.local.node_id]

    # --- hosts ------------------------------------------------------------------------

    def hosting(self, fid):
        """The live peers whose own statement lists ``fid``."""
        return [p for p in self.registry.peers() if fid in p.function_map]

    def replicas(self, fid):
        """The verified, live hosts of ``fid`` (what LOOKUP answers)."""
        return verified_replicas(self.registry, fid, self.hosting(fid))

    def cold_replicas(self, fid):
        """Live peers placed for ``fid`` but not verified yet: in the placement with no passed challenge,
        or with an offer of it outstanding here. They may have to fetch the package before a call runs."""
        placement = self.registry.placement(fid)
        placed = {n for n, at in placement.hosts if at == 0} if placement is not None else set()
        placed |= {n for (f, n) in self._offers if f == fid}
        verified = set(placement.verified) if placement is not None else set()
        return [p for p in self.registry.peers() if p.node_id in placed and p.node_id not in verified]

    # --- the manager's loop -------------------------------------------------------------

    def _changed(self, change):
        """A peer's statement or a function changed: manage its functions now (eventually, never reentrant)."""
        if change.kind == "peer":
            fids = [f for f in change.record.function_map if self.registry.function(f) is not None]
        elif change.kind == "function":
            fids = [change.record.fid]
        else:
            return
        for fid in fids[:64]:
            self.kick(fid)

    def kick(self, fid):
        if fid in self._kicked or len(self._kicked) >= 1024:
            return
        if not self._kicked:
            self.clock.callLater(0, self._run_kicked)
        self._kicked.add(fid)

    def _run_kicked(self):
        fids, self._kicked = self._kicked, set()
        now = self.clock.seconds()
        budget = [MAX_OFFERS_PER_TICK]
        for fid in fids:
            function = self.registry.function(fid)
            if function is None or self.manager_of(fid) != self.local.node_id:
                continue
            try:
                self.manage(function, now, budget)
            except Exception:
                log.failure("managing {fid}", fid=fid[:16])

    def tick(self):
        now = self.clock.seconds()
        self._expire(now)
        budget = [MAX_OFFERS_PER_TICK]
        for function in self.managed():
            try:
                self.manage(function, now, budget)
            except Exception:  # one function never stops the loop for the others
                log.failure("managing {fid}", fid=function.fid[:16])

    def manage(self, function, now, budget):
        fid = function.fid
        if self.is_gone(fid):
            return  # past its sunset: placed nowhere, repaired never (RFC 9.10)
        raw = fidmod.from_text(fid)
        hosts = {p.node_id: p for p in self.hosting(fid)}
        if not self._holds(raw):
            self._fetch_own_copy(function, raw)
        for node_id in hosts:
            self._offers.pop((fid, node_id), None)
            if now >= self._next_challenge.get((fid, node_id), 0):
                self.challenge(fid, raw, node_id)
        verified_peers = [n for n in hosts if (fid, n) in self._verified]
        pending = [n for (f, n) in self._offers if f == fid and n not in hosts]
        wanted = function.replicas - len(hosts) - len(pending)
        if wanted > 0 and budget[0] > 0:
            taken = {self.group_of(hosts[n].addresses[0][0]) for n in hosts if hosts[n].addresses}
            chosen = place(self.candidates(fid, hosts, pending), min(wanted, budget[0]), taken, self.group_of)
            budget[0] -= len(chosen)
            for peer in chosen:
                self.offer(function, peer)
        entries = [(n, int(self._verified[(fid, n)])) for n in verified_peers]
        entries += [(n, 0) for n in hosts if n not in verified_peers]
        if len(verified_peers) < function.replicas and self._holds(raw):
            # No peer can host it yet, or too few: we host it ourselves meanwhile.
            since = self._self_since.setdefault(fid, int(now))
            entries.append((self.local.node_id, since))
        else:
            self._self_since.pop(fid, None)
        self.registry.publish_placement(fid, entries[:MAX_REPLICAS])

    def _fetch_own_copy(self, function, raw):
        """A manager that took over without the package fetches it from the replicas, to challenge them."""
        if self.fetcher is None or self.fetcher.fetching(raw):
            return
        sources = [m.Source(p.node_id, *p.addresses[0]) for p in self.replicas(function.fid)
                   if p.addresses and p.reachability == "reachable"][:8]
        if not sources:
            return
        d = self.fetcher.fetch(raw, function.package_size, sources)
        d.addCallbacks(lambda _: self.kick(function.fid),
                       lambda f: log.info("cannot fetch {fid} to manage it: {why}", fid=function.fid[:16],
                                          why=f.getErrorMessage()[:200]))

    def candidates(self, fid, hosts, pending):
        now = self.clock.seconds()
        out = []
        for peer in self.registry.peers():
            if peer.node_id in hosts or peer.node_id in pending:
                continue  # a peer without an address (relayed) may host: OFFER, FETCH and calls use its session
            if self._penalty.get(peer.node_id, 0) > now:
                continue
            record = self.table.get(peer.node_id)
            if record is None or not record.ready:
                continue
            out.append(peer)
        return out

    def offer(self, function, peer):
        record = self.table.get(peer.node_id)
        fid, raw = function.fid, fidmod.from_text(function.fid)
        self._offers[(fid, peer.node_id)] = self.clock.seconds()
        sources = [m.Source(self.local.node_id, *self.local.advertise)] if self.local.advertise else []
        for host in self.replicas(fid)[:8]:
            if host.addresses and host.reachability == "reachable":
                sources.append(m.Source(host.node_id, *host.addresses[0]))
        owner = (m.Tlv(int(TlvType.OWNER_KEY), function.owner),)  # the host checks LOGS with it (RFC 10.7)
        d = record.request(m.Offer(fid=raw, package_size=function.package_size, sources=tuple(sources),
                                   manifest=function.manifest, ext=owner), timeout_s=OFFER_TIMEOUT_S)

        def answered(ack):
            if ack.status != 0 or ack.replicas != 1:
                self._offers.pop((fid, peer.node_id), None)
                self.penalise(peer.node_id, PENALTY_S / 10)  # declined: ask others first for a while
                log.info("{peer} declined {fid}: {text}", peer=record.name, fid=fid[:16], text=ack.text[:120])

        def failed(failure):
            self._offers.pop((fid, peer.node_id), None)

        d.addCallbacks(answered, failed)

    def challenge(self, fid, raw, node_id):
        key = (fid, node_id)
        record = self.table.get(node_id)
        if key in self._challenging or record is None or not record.ready or not self._holds(raw):
            return
        nonce = os.urandom(32)
        self._challenging.add(key)
        self._next_challenge[key] = self.clock.seconds() + CHALLENGE_TIMEOUT_S
        expected = self.packages.proof(raw, nonce)
        asked = record.request(m.Challenge(fid=raw, nonce=nonce), timeout_s=CHALLENGE_TIMEOUT_S)

        def compare(results):
            (ok_expected, want), (ok_proof, proof) = results
            self._challenging.discard(key)
            if not ok_expected:
                return  # our own copy failed us: try again later
            if not ok_proof:
                from orb.net.adapter import RemoteError

                if proof.check(RemoteError) and proof.value.code == ErrorCode.NOT_FOUND:
                    self._drop(fid, node_id, "does not hold it (ERROR not_found)", penalty=0)
                else:
                    self._drop(fid, node_id, f"no proof ({proof.getErrorMessage()[:80]})", penalty=PENALTY_S)
                return
            if proof.digest != want or proof.fid != raw:
                self._drop(fid, node_id, "wrong proof", penalty=PENALTY_S)
                return
            now = self.clock.seconds()
            self._verified[key] = now
            self._next_challenge[key] = now + self.rng.uniform(self.challenge_min_s, self.challenge_max_s)
            self.kick(fid)  # publish the verified host now

        from twisted.internet.defer import DeferredList

        DeferredList([expected, asked], consumeErrors=True).addCallback(compare)

    def _drop(self, fid, node_id, why, penalty):
        log.info("replica of {fid} on {peer} dropped: {why}", fid=fid[:16], peer=node_id.hex()[:16], why=why)
        self._verified.pop((fid, node_id), None)
        self._offers.pop((fid, node_id), None)
        if penalty:
            self.penalise(node_id, penalty)
        placement = self.registry.placement(fid)
        if placement is not None and placement.tracker == self.local.node_id:
            self.registry.publish_placement(fid, [h for h in placement.hosts if h[0] != node_id])

    def penalise(self, node_id, seconds):
        """Offer ``node_id`` no function for ``seconds`` (also a wrong canary answer, orb.tracker.canary);
        a shorter penalty never cuts a longer one short."""
        until = self._penalty.pop(node_id, 0)
        if len(self._penalty) >= MAX_PENALTIES:
            self._penalty.pop(next(iter(self._penalty)))
        self._penalty[node_id] = max(until, self.clock.seconds() + seconds)

    def verified_since(self, t):
        """(fid text, node id) of every host that passed a challenge of ours at or after ``t`` (payments' epochs)."""
        return [key for key, at in self._verified.items() if at >= t]

    def penalised(self, node_id):
        return self._penalty.get(node_id, 0) > self.clock.seconds()

    def _expire(self, now):
        for key, at in list(self._offers.items()):
            if now - at > OFFER_TIMEOUT_S:
                del self._offers[key]
        live = {p.node_id for p in self.registry.peers()}
        for table in (self._verified, self._next_challenge):
            for key in [k for k in table if k[1] not in live]:
                del table[key]

    # --- sessions ---------------------------------------------------------------------

    def session_ready(self, record):
        """A peer (re)joined: challenge it on every fid it claims that we manage."""
        peer = self.registry.peer(record.node_id)
        if peer is None:
            return
        for fid in peer.function_map:
            self._next_challenge.pop((fid, record.node_id), None)

    # --- LOOKUP -------------------------------------------------------------------------

    def on_lookup(self, record, message, request_id):
        try:
            fid = fidmod.to_text(message.fid)
        except fidmod.FidError:
            record.refuse(request_id, ErrorCode.MALFORMED, "LOOKUP of an invalid fid")
            return
        if self.registry.function(fid) is None:
            record.refuse(request_id, ErrorCode.NOT_FOUND, f"no function {fid[:20]}... is deployed")
            return
        if self.is_gone(fid):
            record.refuse(request_id, ErrorCode.GONE, f"{fid[:20]}... is past the sunset its owner set")
            return
        limit = message.max_replicas or DEFAULT_LOOKUP_REPLICAS
        replicas = []
        for peer in rank_replicas(self.replicas(fid), limit=limit):
            host, port = peer.addresses[0] if peer.addresses else self.relay_address(peer)
            reach = {"reachable": m.Reachability.DIRECT, "relayed": m.Reachability.RELAYED}.get(
                peer.reachability, m.Reachability.UNKNOWN)
            replicas.append(m.Replica(peer.node_id, host, port, peer.roles & 0xFF, int(reach),
                                      peer.rtt_ms or 0, peer.load_permille))
        placement = self.registry.placement(fid)
        tracker = None if placement is None else self.registry.tracker(placement.tracker)
        if (len(replicas) < limit and tracker is not None and tracker.addresses
                and tracker.node_id in placement.verified):
            # The managing tracker hosts it itself (no peer could, or not enough yet).
            replicas.append(m.Replica(tracker.node_id, *tracker.addresses[0], int(Role.TRACKER | Role.RELAY),
                                      int(m.Reachability.DIRECT), 0, 0))
        record.send(m.Peers(fid=message.fid, replicas=tuple(replicas)), response_to=request_id)

    def relay_address(self, peer):
        """Where a caller sends RELAY for a peer without an address (RFC 5.1, Replica): its home tracker's
        wire address, this tracker's own when it is the home; 0.0.0.0:0 when neither is known."""
        if peer.home == self.local.node_id and self.local.advertise:
            return self.local.advertise
        home = self.registry.tracker(peer.home)
        if home is not None and home.addresses:
            return home.addresses[0]
        return ("0.0.0.0", 0)
