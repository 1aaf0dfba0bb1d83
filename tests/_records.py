"""
Signed registry records for tests: deterministic keys, and peer, tracker
and function records signed as a real peer, tracker or owner signs them.
"""

import hashlib

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from orb.identity import NodeKey
from orb.protocol import federation as fed
from orb.protocol import messages as m


def key(label):
    """A node key derived from ``label`` (an int or text): the same in every run."""
    seed = hashlib.sha256(f"orb-test-key-{label}".encode()).digest()
    return NodeKey(Ed25519PrivateKey.from_private_bytes(seed))


def statement(peer_key, home, seq=1, time=0, addresses=(("10.2.0.1", 7401),), load_permille=0, functions=None,
              roles=1):
    return fed.make_peer_statement(peer_key, seq, time, home, addresses, load_permille, functions, roles)


def observation(home_key, st, seq=1, time=None, reachability="reachable", rtt_ms=None, connected=True):
    return fed.Observation(
        peer=st.node_id, statement_seq=st.seq, tracker=home_key.node_id, key=home_key.public_bytes, seq=seq,
        time=st.time if time is None else time, reachability=reachability, rtt_ms=rtt_ms, connected=connected,
    ).signed(home_key.sign)


def peer_record(peer_key, home_key, seq=1, time=0, obs_seq=1, reachability="reachable", rtt_ms=None,
                connected=True, **statement_fields):
    """A peer's record as its home replicates it: the statement and the home's observation."""
    st = statement(peer_key, home_key.node_id, seq, time, **statement_fields)
    return fed.PeerRecord(st, observation(home_key, st, obs_seq, None, reachability, rtt_ms, connected))


def tracker_record(tracker_key, seq=1, time=0, addresses=(("10.1.0.1", 7400),)):
    return fed.TrackerRecord(tracker_key.node_id, tracker_key.public_bytes, seq, time,
                             fed.canonical_addresses(addresses)).signed(tracker_key.sign)


MANIFEST_TOML = """\
name = "{name}"
version = "{version}"
runtime = "python"
replicas = {replicas}

[[sample]]
input = "hi"
output = "hi"
"""


def manifest_bytes(name="echo", version="1.0.0", replicas=3, visibility="public"):
    import attrs

    from orb.protocol import manifest

    parsed = manifest.from_toml(MANIFEST_TOML.format(name=name, version=version, replicas=replicas))
    return manifest.canonical_bytes(attrs.evolve(parsed, visibility=visibility))


def function_record(owner_key, fid, time=0, version="1.0.0", replicas=3, package_size=1024, name="echo",
                    visibility="public"):
    """An owner's signed deploy statement for ``fid`` (text), as the registry holds it."""
    from orb.protocol import fid as fidmod
    from orb.protocol.deploy import sign_deploy

    data = manifest_bytes(name, version, replicas, visibility)
    sig = sign_deploy(owner_key, fidmod.from_text(fid), data, package_size, time)
    return fed.FunctionRecord(fid, owner_key.public_bytes, data, package_size, time, sig)


def announce(peer_key, home, seq=1, time=0, addresses=(("10.2.0.1", 7401),), load_permille=0, functions=None,
             roles=1):
    """The ANNOUNCE a peer sends its home ``home`` (a node id)."""
    st = statement(peer_key, home, seq, time, addresses, load_permille, functions, roles)
    return to_announce(st)


def to_announce(st):
    from orb.protocol import fid as fidmod

    return m.Announce(
        seq=st.seq, time=st.time, load_permille=st.load_permille, roles=st.roles,
        listen=tuple(m.Endpoint(h, p) for h, p in st.addresses),
        functions=tuple(m.FunctionEntry(fidmod.from_text(f), v) for f, v in st.functions),
        signature=st.sig,
    )


def home_peer(registry, peer_key, addresses=(("10.2.0.1", 7401),), reachability="unknown", rtt_ms=None,
              load_permille=0, functions=None, roles=1, seq=1):
    """Register ``peer_key`` at ``registry`` as its home does on ANNOUNCE; returns the peer's node id."""
    st = statement(peer_key, registry.tracker_id, seq, int(registry.now()), addresses, load_permille, functions,
                   roles)
    registry.announce_peer(st, reachability=reachability, rtt_ms=rtt_ms)
    return peer_key.node_id


def remote_tracker(registry, tracker_key, addresses=(("10.1.0.2", 7400),), seq=1):
    """Give ``registry`` another tracker's own record, as that tracker's first change."""
    from orb.tracker import registry as reg

    record = tracker_record(tracker_key, seq, int(registry.now()), addresses)
    return registry.apply_remote(reg.Change(tracker_key.node_id, registry._known.get(tracker_key.node_id, 0) + 1,
                                            fed.TRACKER, record))
