"""
bench/gas.py as a smoke run (--quick): it measures every part on the
embedded chain, writes gas.json, and the issue's target holds.
"""

import importlib.util
import io
import json
import os
from contextlib import redirect_stdout

from twisted.trial import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_gas():
    """bench/gas.py as a module, without putting bench/ on sys.path (its dns.py would shadow dnspython)."""
    spec = importlib.util.spec_from_file_location("orb_bench_gas", os.path.join(ROOT, "bench", "gas.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gas = _load_gas()


class GasBenchTests(unittest.TestCase):
    def test_quick_run_meets_the_target(self):
        """bench/gas.py --quick runs, reports every measure, and a claim of 10,000 requests costs <= 1% of per-receipt gas a request."""
        out = self.mktemp()
        printed = io.StringIO()
        with redirect_stdout(printed):
            rc = gas.main(["--quick", "--out", out])
        with open(os.path.join(out, "gas.json")) as f:
            figures = json.load(f)
        self.assertEqual(rc, 0, printed.getvalue())
        self.assertEqual([c["requests"] for c in figures["claim"]], [1, 100, 10_000])
        self.assertEqual([b["vouchers"] for b in figures["batch"]], [1, 10])
        self.assertGreater(figures["baseline"]["per_request_marginal"], 20_000)
        self.assertTrue(figures["target"]["met"])
        self.assertLessEqual(figures["target"]["ratio"], 0.01)
        # A claim's gas does not grow with the requests it pays for.
        first = [c["first_gas"] for c in figures["claim"]]
        self.assertLess(max(first) - min(first), 200)
        self.assertIn("EXTRAPOLATED", printed.getvalue())
