"""
Test helpers for real daemons (see orb.devnet): a mixin whose devnet is
stopped, every process of it, by each test's cleanup.
"""

import os
import signal
import sys

from twisted.internet import defer, utils

from orb.devnet import Daemon, Devnet, eventually, sleep  # noqa: F401

ORB = os.path.join(os.path.dirname(os.path.abspath(sys.executable)), "orb")


class DaemonTestMixin:
    """For trial TestCases: start daemons that are stopped at cleanup."""

    network = "itest"

    @property
    def net(self):
        if not hasattr(self, "_net"):
            base_dir = os.path.abspath(self.mktemp())
            os.makedirs(base_dir)
            self._net = Devnet(base_dir, network=self.network)
            self.addCleanup(self._net.stop_all, signal.SIGKILL)
        return self._net

    def base_dir(self):
        return self.net.base_dir

    def daemon(self, kind, name, *args):
        return self.net.daemon(kind, name, *args)

    def start_tracker(self, name, *args):
        return self.net.start_tracker(name, *args)

    def start_peer(self, name, *args):
        return self.net.start_peer(name, *args)

    def start_trackers(self, *names):
        return self.net.start_trackers(*names)

    def start_chain(self, withdraw_delay_s=600, name="chain"):
        """A `twistd orb-chain` with OrbEscrow deployed, its withdrawal delay ``withdraw_delay_s``."""
        return self.net.start_chain(name, "--withdraw-delay", str(withdraw_delay_s))

    def orb_env(self, home="owner"):
        """The environment of an `orb` command run as the user whose $ORB_HOME is ``home`` here."""
        return dict(os.environ, ORB_HOME=os.path.join(self.net.base_dir, home), ORB_NETWORK=self.network)

    @defer.inlineCallbacks
    def orb(self, *argv, home="owner"):
        """Run the real `orb` command: (exit status, stdout, stderr)."""
        out, err, code = yield utils.getProcessOutputAndValue(ORB, argv, env=self.orb_env(home))
        return code, out.decode(), err.decode()
