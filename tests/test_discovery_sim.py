# -*- test-case-name: tests.test_discovery_sim -*-
"""
The discovery simulation harness (bench/discovery.py) at toy size: 30
peers and 2 trackers on in-memory transports and a simulated clock. The
figures belong to the bench; this only checks that the harness runs the
real node code to convergence, that churn is seen, and that the clock and
transports behave.
"""

import argparse
import importlib.util
import os

from twisted.trial.unittest import SynchronousTestCase

_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "discovery.py")
_spec = importlib.util.spec_from_file_location("orb_bench_discovery", _PATH)
discovery = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(discovery)


def toy_args(**kw):
    args = argparse.Namespace(
        peers=30, trackers=2, seed=3, quick=True, tracker_max_inbound=117, min_latency_ms=5.0,
        max_latency_ms=50.0, verbose=False, join_over=1.0,
    )
    for k, v in kw.items():
        setattr(args, k, v)
    return args


class SimClockTests(SynchronousTestCase):
    def test_order_cancel_reset(self):
        """The simulated clock runs calls in time order, honours cancel, reset and delay."""
        clock = discovery.SimClock(start_s=100.0)
        seen = []
        clock.callLater(2, seen.append, "b")
        clock.callLater(1, seen.append, "a")
        clock.callLater(1, seen.append, "a2")  # same time: call order
        cancelled = clock.callLater(1.5, seen.append, "never")
        cancelled.cancel()
        moved = clock.callLater(5, seen.append, "c")
        moved.reset(2.5)
        later = clock.callLater(0.5, seen.append, "d")
        later.delay(3)
        clock.advance(3)
        self.assertEqual(seen, ["a", "a2", "b", "c"])
        self.assertEqual(clock.seconds(), 103.0)
        clock.advance(1)
        self.assertEqual(seen[-1], "d")


class DiscoverySimulationTests(SynchronousTestCase):
    def test_converges_and_survives_churn(self):
        """30 real peer cores and 2 tracker cores converge, and stay connected and listed under churn."""
        sim = discovery.Simulation(toy_args())
        boot = sim.bootstrap(limit_s=180.0)
        self.assertIsNotNone(boot["converged_s"], boot["final"])
        peers_ok, trackers_ok = sim.converged()
        self.assertEqual((peers_ok, trackers_ok), (30, 2))
        for tracker in sim.trackers:
            self.assertEqual(len(tracker.core.registry.peers()), 30)

        churn = sim.measure_rates(120.0, churn_per_min=0.10, sample_after_s=60.0)
        self.assertGreater(churn["left"], 0)
        self.assertEqual(churn["left"], churn["joined"])
        self.assertEqual(len(sim.live_peers()), 30)
        # Peers up for a minute are known to every tracker; the departed
        # ones linger until the registry's TTL expires them.
        self.assertGreaterEqual(churn["mean"]["registry_known_settled"], 0.95)
        self.assertGreater(churn["mean"]["mean_outbound"], 6.0)
        self.assertGreater(churn["peer_frames_tx_per_min"], 0)
        self.assertEqual(sim.clock.failures, 0)

    def test_departed_node_is_unreachable(self):
        """A node that leaves the simulation drops every session, and dials to it fail."""
        sim = discovery.Simulation(toy_args(peers=10))
        sim.bootstrap(limit_s=5.0)
        gone = sim.peers[0]
        gone.sim_kill()
        sim.run_until(sim.clock.seconds() + 1.0)
        self.assertEqual(gone.sim_transports, set())
        for peer in sim.peers[1:]:
            self.assertNotIn(gone.node_id, peer.core.table)
        failures = []
        sim.peers[1].core.table.dial(gone.host, gone.port).addErrback(failures.append)
        sim.run_until(sim.clock.seconds() + discovery.DIAL_TIMEOUT_S + 1.0)
        self.assertEqual(len(failures), 1)
