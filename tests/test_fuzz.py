"""
The bounded live fuzz (tools/fuzz.py) against a real tracker and a real
peer: structure-aware hostile frames from many connections, while an
honest client must be served throughout. ORB_FUZZ_SECONDS sets the time
per daemon (60 by default; CI runs the default).
"""

import os
import subprocess
import sys

from twisted.trial.unittest import TestCase

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECONDS = float(os.environ.get("ORB_FUZZ_SECONDS", "60"))


class LiveFuzzTests(TestCase):
    timeout = SECONDS + 120

    def fuzz(self, target, seed):
        result = subprocess.run(
            [sys.executable, os.path.join(ROOT, "tools", "fuzz.py"), "--target", target, "--seconds", str(SECONDS),
             "--connections", "16", "--seed", str(seed)],
            capture_output=True, text=True, timeout=SECONDS + 100, cwd=ROOT,
        )
        summary = [line for line in result.stdout.splitlines() if line.startswith(("PASS", "FAIL"))]
        self.assertEqual(result.returncode, 0, result.stdout[-4000:] + result.stderr[-4000:])
        self.assertTrue(summary and summary[-1].startswith("PASS"), result.stdout[-2000:])

    def test_tracker_survives_the_fuzz(self):
        """A tracker fuzzed for a minute stays up, logs no traceback, and answers an honest client every time."""
        self.fuzz("tracker", 11)

    def test_peer_survives_the_fuzz(self):
        """A peer fuzzed for a minute stays up, logs no traceback, and answers an honest client every time."""
        self.fuzz("peer", 12)
