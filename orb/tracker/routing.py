# -*- test-case-name: tests.test_router -*-
"""
The one ranking of a function's replicas: which peer should serve a call
(RFC 10.1).

A replica's cost is

    cost = rtt_ms × (outstanding + 1) × (1000 + load_permille) / 1000

* ``rtt_ms``: for the router, the replica's *peak EWMA* of this function's
  call latency when it has answered calls (Finagle's and Linkerd's
  load-balancing cost: it jumps to a slower answer at once and decays
  towards faster ones, so a replica that stalls is avoided after its first
  slow answer); else, and always for LOOKUP, the REST API and DNS, the RTT
  this tracker measured by PING. Either is at least MIN_RTT_MS (loopback
  and LAN peers are all "5 ms"). A peer with neither ranks after every
  measured one (DNS puts it in the last SRV band); among such peers
  ``rtt_ms`` is DEFAULT_RTT_MS;
* ``outstanding``: the calls this tracker has in flight on the replica
  (the router's bookkeeping; 0 for LOOKUP, the REST API and DNS, which see
  no calls);
* ``load_permille``: the load of the peer's last ANNOUNCE, so a saturated
  peer (1000) counts as twice as far as an idle one at the same RTT.

``rank_replicas`` sorts by cost, ties to the lower load then the lower node
id, so LOOKUP, the REST API and DNS get one deterministic best-first list.
The router calls ``choose``: power-of-two-choices, two distinct replicas
drawn at random, the cheaper one taken (a tie to the one drawn first),
which spreads calls over equally good replicas instead of piling them on
the first. ``direct=True`` keeps
only replicas that accept direct connections (what a DNS SRV answer may
list); relayed ones are reached through their home tracker instead.
"""

from collections.abc import Callable, Iterable

from orb.protocol.federation import PeerRecord

DEFAULT_RTT_MS = 100  # an unmeasured peer is taken to be this far away
MIN_RTT_MS = 5  # below this a measured RTT is noise next to a call's own time (loopback, a LAN)


def _none(node_id):
    return 0


def _no_latency(node_id):
    return None


def replica_cost(peer: PeerRecord, outstanding: int = 0, latency_ms: float | None = None) -> tuple:
    """The sort key of ``rank_replicas``: lower is better. Its first two items are what ``choose`` compares."""
    measured = latency_ms if latency_ms is not None else peer.rtt_ms
    unmeasured = measured is None
    rtt_ms = DEFAULT_RTT_MS if unmeasured else max(MIN_RTT_MS, measured)
    return (unmeasured, rtt_ms * (outstanding + 1) * (1000 + peer.load_permille), peer.load_permille, peer.node_id)


def rank_replicas(hosts: Iterable[PeerRecord], direct: bool = False, limit: int | None = None,
                  outstanding: Callable[[bytes], int] = _none) -> list[PeerRecord]:
    """``hosts`` best first (see the module docstring), at most ``limit``."""
    if direct:
        hosts = [p for p in hosts if p.reachability == "reachable" and p.addresses]
    ranked = sorted(hosts, key=lambda p: replica_cost(p, outstanding(p.node_id)))
    return ranked if limit is None else ranked[: max(0, limit)]


def choose(hosts: list[PeerRecord], rng, outstanding: Callable[[bytes], int] = _none,
           latency_ms: Callable[[bytes], float | None] = _no_latency) -> PeerRecord | None:
    """Power-of-two-choices: of two distinct hosts drawn with ``rng``, the cheaper (None if no host).
    ``latency_ms(node_id)``: the replica's call latency for this function (its peak EWMA), or None."""
    if not hosts:
        return None
    if len(hosts) == 1:
        return hosts[0]
    a, b = rng.sample(hosts, 2)  # in random order: a tie goes to the one drawn first
    return min(a, b, key=lambda p: replica_cost(p, outstanding(p.node_id), latency_ms(p.node_id))[:2])
