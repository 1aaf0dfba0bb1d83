"""
Test helpers for real daemons (see orb.devnet): a mixin whose daemons are
stopped by each test's cleanup.
"""

import os
import signal

from twisted.internet import defer

from orb.devnet import Daemon, eventually, sleep  # noqa: F401


class DaemonTestMixin:
    """For trial TestCases: start daemons that are stopped at cleanup."""

    network = "itest"

    def daemon(self, kind, name, *args):
        data_dir = os.path.join(self.base_dir(), name)
        daemon = Daemon(kind, data_dir, args, network=self.network)
        self.addCleanup(daemon.stop, signal.SIGKILL, 10.0)
        return daemon

    def base_dir(self):
        if not hasattr(self, "_base_dir"):
            self._base_dir = os.path.abspath(self.mktemp())
            os.makedirs(self._base_dir)
        return self._base_dir

    @defer.inlineCallbacks
    def start_tracker(self, name, *args):
        daemon = self.daemon(
            "orb-tracker", name, "--listen", "tcp:0:interface=127.0.0.1", "--http", "tcp:0:interface=127.0.0.1",
            *args,
        )
        yield daemon.start()
        return daemon

    @defer.inlineCallbacks
    def start_peer(self, name, *args):
        daemon = self.daemon("orb-peer", name, "--listen", "tcp:0:interface=127.0.0.1", *args)
        yield daemon.start()
        return daemon
