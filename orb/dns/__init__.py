"""
The ``.orb`` DNS zone that every tracker serves (RFC 9.9), and the client
side that peers, ``orb resolve`` and ``orb invoke --direct`` use.

    names       the zone's names, parsed (pure)
    authority   OrbAuthority: an IResolver over the registry and the one ranking
    server      the DNSServerFactory and the UDP/TCP protocols: EDNS0, TC, RRL, bad input
    service     the tracker's --dns child service
    client      queries: seed.orb for bootstrap, SRV and TXT for callers
"""
