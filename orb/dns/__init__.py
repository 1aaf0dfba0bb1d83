"""
The ``.orb`` DNS zone that every tracker serves (RFC 9.9), and the client
side that peers, ``orb resolve`` and ``orb invoke --direct`` use.

    names       the zone's names, parsed (pure)
    authority   OrbAuthority: an IResolver over the registry and the one ranking
    server      the DNSServerFactory and the UDP/TCP protocols: EDNS0, TC, RRL, bad input
    service     the tracker's --dns child service
    client      queries: seed.orb for bootstrap, SRV and TXT for callers

It imports neither role (tests/test_layering: no cycles): the tracker's
tap hands the service its registry and its replica rule
(``orb.tracker.wiring.dns_replicas``), and the peer's tap takes
``client.seed_lookup``.
"""
