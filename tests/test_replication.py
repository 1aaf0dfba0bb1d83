"""
Placement and management of replicas (orb.tracker.replication): the pure
policies. The whole loop runs against real daemons in tests/test_functions.py.
"""

from twisted.trial.unittest import SynchronousTestCase

from orb.protocol import fid as fidmod
from orb.tracker.replication import home_of, place, placement_group
from tests import _records as records

HOME = records.key("placement-home")


def peer(n, ip, rtt_ms=10, load_permille=0):
    return records.peer_record(records.key(f"placement-peer-{n}"), HOME, addresses=[(ip, 7401)], rtt_ms=rtt_ms,
                               load_permille=load_permille)


class HomeTests(SynchronousTestCase):
    def test_every_tracker_computes_the_same_home(self):
        """The home of a fid depends on the set of live trackers only, not on their order."""
        trackers = [records.key(f"t{i}").node_id for i in range(5)]
        fid = fidmod.fid_for(b"home")
        self.assertEqual(home_of(fid, trackers), home_of(fid, list(reversed(trackers))))

    def test_a_dead_home_moves_only_its_own_functions(self):
        """When the home dies its functions move to others; functions homed elsewhere stay put."""
        trackers = [records.key(f"t{i}").node_id for i in range(5)]
        fids = [fidmod.fid_for(f"f{i}".encode()) for i in range(200)]
        before = {f: home_of(f, trackers) for f in fids}
        dead = trackers[2]
        after = {f: home_of(f, [t for t in trackers if t != dead]) for f in fids}
        moved = {f for f in fids if before[f] != after[f]}
        self.assertEqual(moved, {f for f in fids if before[f] == dead})
        self.assertTrue(moved)
        self.assertGreater(len({before[f] for f in fids}), 3)  # spread over the trackers

    def test_no_tracker_no_home(self):
        """With no live tracker there is no home."""
        self.assertIsNone(home_of(fidmod.fid_for(b"x"), []))


class PlaceTests(SynchronousTestCase):
    def test_replicas_go_to_distinct_groups_first(self):
        """Three replicas go to three /16 groups even when a fourth peer in a used group is faster."""
        candidates = [peer(1, "127.1.0.1", rtt_ms=6), peer(2, "127.1.0.2", rtt_ms=8), peer(3, "127.2.0.1", rtt_ms=30),
                      peer(4, "127.3.0.1", rtt_ms=40)]
        chosen = place(candidates, 3, taken_groups=set())
        self.assertEqual(len({placement_group(p.addresses[0][0]) for p in chosen}), 3)
        self.assertIn(candidates[0], chosen)

    def test_groups_already_hosting_are_avoided(self):
        """A group that already hosts a replica is used only when no other group is left."""
        candidates = [peer(1, "10.1.0.1", rtt_ms=1), peer(2, "10.2.0.1", rtt_ms=50)]
        self.assertEqual(place(candidates, 1, taken_groups={("10", "1")}), [candidates[1]])
        self.assertEqual(place(candidates, 2, taken_groups={("10", "1")}), [candidates[1], candidates[0]])

    def test_spare_capacity_and_low_rtt_are_preferred(self):
        """Within fresh groups, the least loaded and nearest peers are chosen (the one ranking)."""
        candidates = [peer(1, "10.1.0.1", rtt_ms=10, load_permille=1000), peer(2, "10.2.0.1", rtt_ms=12),
                      peer(3, "10.3.0.1", rtt_ms=100)]
        self.assertEqual(place(candidates, 1, set()), [candidates[1]])

    def test_ipv6_groups_by_slash_32(self):
        """IPv6 peers group by /32."""
        self.assertEqual(placement_group("2001:db8:1::1"), placement_group("2001:db8:ffff::1"))
        self.assertNotEqual(placement_group("2001:db8::1"), placement_group("2001:db9::1"))

    def test_fewer_candidates_than_wanted(self):
        """With fewer candidates than replicas wanted, all of them are chosen, no more."""
        candidates = [peer(1, "10.1.0.1")]
        self.assertEqual(place(candidates, 3, set()), candidates)


class ManagerTests(SynchronousTestCase):
    """Who manages a function: its placement's tracker while that one is live, else the home by hashing."""

    def setUp(self):
        from twisted.internet.task import Clock

        from orb.tracker.registry import Registry
        from orb.tracker.replication import Replication

        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.keys = [records.key(f"manager-{i}") for i in range(3)]
        self.reg = Registry(self.clock, self.keys[0])
        self.reg.publish_self([("10.1.0.1", 7400)])
        for k in self.keys[1:]:
            records.remote_tracker(self.reg, k)

        class _Local:
            node_id = self.keys[0].node_id

        self.replication = Replication(self.clock, _Local(), None, self.reg, None)
        self.fid = fidmod.to_text(fidmod.fid_for(b"managed"))

    def place_by(self, key):
        from orb.protocol import federation as fed
        from orb.tracker.registry import Change

        record = fed.Placement(self.fid, key.node_id, key.public_bytes, 1, int(self.clock.seconds())).signed(key.sign)
        self.reg.apply_remote(Change(key.node_id, self.reg._known.get(key.node_id, 0) + 1, fed.PLACEMENT, record))

    def test_the_placing_tracker_manages_while_it_lives(self):
        """The tracker that wrote the placement manages the function, whatever the hashing says."""
        self.place_by(self.keys[2])
        self.assertEqual(self.replication.manager_of(self.fid), self.keys[2].node_id)

    def test_a_dead_manager_hands_over_to_the_home(self):
        """When the placing tracker's record goes stale, the home by rendezvous hashing among the live ones takes over."""
        self.place_by(self.keys[2])
        self.clock.advance(self.reg.tracker_ttl_s + 1)
        self.reg.publish_self([("10.1.0.1", 7400)])
        records.remote_tracker(self.reg, self.keys[1], seq=2)
        self.reg.expire()
        live = [self.keys[0].node_id, self.keys[1].node_id]
        self.assertEqual(self.replication.manager_of(self.fid), home_of(fidmod.from_text(self.fid), live))
        self.assertNotEqual(self.replication.manager_of(self.fid), self.keys[2].node_id)


class RelayedPeerTests(SynchronousTestCase):
    """A peer behind NAT (no address, a session to its home) may host, and LOOKUP names where to RELAY."""

    def setUp(self):
        from twisted.internet.task import Clock

        from orb.tracker.registry import Registry
        from orb.tracker.replication import Replication

        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.local_key, self.far_key = records.key("relayed-local"), records.key("relayed-far")
        self.reg = Registry(self.clock, self.local_key)
        self.reg.publish_self([("10.1.0.1", 7400)])
        records.remote_tracker(self.reg, self.far_key, addresses=(("10.9.0.1", 7400),))
        local_key = self.local_key

        class _Local:
            node_id = local_key.node_id
            advertise = ("10.1.0.1", 7400)

        class _Ready:
            ready = True

        class _Table:
            def get(self, node_id):
                return _Ready()

        self.replication = Replication(self.clock, _Local(), _Table(), self.reg, None)

    def relayed(self, n, home_key):
        return records.peer_record(records.key(f"relayed-peer-{n}"), home_key, addresses=[],
                                   reachability="relayed", time=int(self.clock.seconds()))

    def test_a_peer_without_an_address_is_a_placement_candidate(self):
        """A relayed peer with a session here can be offered a function: placement no longer needs an address."""
        peer = self.relayed(1, self.local_key)
        self.reg.accept(peer)
        self.assertIn(peer.node_id, {p.node_id for p in self.replication.candidates("fid", {}, [])})

    def test_lookup_gives_the_home_trackers_address_for_a_relayed_replica(self):
        """For a relayed replica, PEERS carries its home tracker's wire address: where to send RELAY (RFC 5.1)."""
        here, far = self.relayed(2, self.local_key), self.relayed(3, self.far_key)
        self.assertEqual(self.replication.relay_address(here), ("10.1.0.1", 7400))
        self.assertEqual(self.replication.relay_address(far), ("10.9.0.1", 7400))
        stranger = self.relayed(4, records.key("relayed-unknown-home"))
        self.assertEqual(self.replication.relay_address(stranger), ("0.0.0.0", 0))
