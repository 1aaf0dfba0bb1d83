# -*- test-case-name: tests.test_registry -*-
"""
The one ranking of a function's replicas: which peer should serve a call.

The REST API lists hosts in this order today; LOOKUP (PEERS), DNS SRV and
the gateway use it as they arrive, so every entry point agrees on "best".

Policy.  A replica's cost is its measured RTT inflated by its load:
``rtt_ms * (1000 + load_permille)``, so a saturated peer (1000 permille)
counts as twice as far away as an idle one at the same distance.
Replicas whose RTT is not measured yet come after every measured one,
least loaded first.  Ties fall to the lower node id, so the order is
deterministic.  ``direct=True`` keeps only replicas that accept direct
connections (what a DNS SRV answer may list); relayed ones are reached
through their home tracker instead.
"""

from collections.abc import Iterable

from orb.protocol.federation import PeerRecord


def replica_cost(peer: PeerRecord) -> tuple:
    """The sort key of ``rank_replicas``: lower is better."""
    if peer.rtt_ms is None:
        return (1, peer.load_permille, 0, peer.node_id)
    return (0, peer.rtt_ms * (1000 + peer.load_permille), peer.load_permille, peer.node_id)


def rank_replicas(hosts: Iterable[PeerRecord], direct: bool = False, limit: int | None = None) -> list[PeerRecord]:
    """``hosts`` best first (see the module docstring), at most ``limit``."""
    if direct:
        hosts = [p for p in hosts if p.reachability == "reachable" and p.addresses]
    ranked = sorted(hosts, key=replica_cost)
    return ranked if limit is None else ranked[: max(0, limit)]
