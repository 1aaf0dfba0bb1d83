"""
The README's main command and the twistd plugins, run as a user would:
real processes, real output.
"""

import os
import re
import subprocess
import sys

from twisted.trial.unittest import TestCase

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


def run(argv, timeout_s=60):
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, cwd=os.getcwd())


class DemoTests(TestCase):
    def test_demo_prints_a_transcript(self):
        """python -m orb.demo exits cleanly: handshake, devnet, function, DNS, calls, names, payments and jail acts."""
        result = run([sys.executable, "-m", "orb.demo"], timeout_s=300)
        self.assertEqual(result.returncode, 0, result.stderr)
        out = result.stdout
        for expected in ("HELLO ", "HELLO_ACK", "PING", "PONG", "GETADDR", "ADDR", "handshake complete: TLSv1.3"):
            self.assertIn(expected, out)
        self.assertIn("RTT", out)
        # The devnet act: real daemons federate, converge and are all stopped.
        self.assertIn("converged", out)
        self.assertIn("registry at tracker-2", out)
        self.assertEqual(out.count("reachable  "), 4)
        # The function act: orb deploy, 3 verified replicas in 3 groups, healed after a kill -9.
        self.assertIn("replicas  3 of 3 verified", out)
        self.assertIn("kill -9", out)
        self.assertIn("back at 3 verified replicas", out)
        # Its name through the tracker's DNS (dig), then the calls: curl, --wire, --direct, NAT, a crash.
        names = out.split("its name:", 1)[1].split("calling it:", 1)[0]
        self.assertIn('"v=orb1"', names)
        self.assertEqual(len(re.findall(r"\.peer\.orb\.", names)), 3)  # SRV: the three replicas
        calls = out.split("calling it:", 1)[1].split("names and versions:", 1)[0]
        self.assertEqual(calls.count("HTTP/1.1 200 OK"), 2)  # curl, before and after the kill
        self.assertIn('"route": "wire"', calls)
        self.assertIn('"route": "direct"', calls)
        self.assertIn("peer-nat now hosts a verified replica", calls)  # the NAT peer took the dead one's place
        self.assertRegex(calls, r"a call (did not reach|reached) peer-nat: HTTP 200")
        self.assertIn('RELAY back from peer-nat: OK {"sum": 42}', calls)  # RFC 10.3 through its home tracker
        table = calls.split("verified replicas", 1)[1]
        for row in ("gateway (curl)", "wire, via tracker", "direct (DNS SRV)", "gateway, after"):
            self.assertIn(row, table)
        self.assertGreaterEqual(table.count('{"sum":'), 5)  # every call in the table answered
        after = out.split("replicas after the crash", 1)[1].split("names and versions:", 1)[0]
        self.assertEqual(len(set(re.findall(r"127\.\d+\.0\.0/16", after))), 3)
        # Names: a call by name, an update that moves it, a deprecation with its headers, then 410 and NXDOMAIN.
        named = out.split("names and versions:", 1)[1].split("a private function:", 1)[0]
        self.assertIn("named     adder.", named)
        self.assertEqual(named.count("HTTP/1.1 200 OK"), 4)  # by name twice, the old fid, by name after the sunset
        self.assertRegex(named, r"fid\s+\w{53} ->\s+\w{53}")  # orb update: old -> new
        self.assertIn("Deprecation: @", named)
        self.assertIn('rel="successor-version"', named)
        self.assertIn('"deprecated=1"', named)
        self.assertIn("HTTP/1.1 410 Gone", named)
        self.assertIn("status: NXDOMAIN", named)
        self.assertRegex(named, r"2\s+\w{53}\s+current")
        self.assertRegex(named, r"1\s+\w{53}\s+gone\s+\w{53}\s+20\d\d-")  # with its successor and sunset
        # A private function: its secret sealed to both hosts, 401 without a token, 200 and signed with one.
        private = out.split("a private function:", 1)[1].split("all daemons stopped", 1)[0]
        self.assertIn("sealed for 2 of 2 host(s)", private)
        self.assertIn("HTTP/1.1 401 Unauthorized", private)
        self.assertIn('"code":"token_required"', private)
        self.assertIn("HTTP/1.1 200 OK", private)
        self.assertRegex(private, r'"signed": true, "hmac": "[0-9a-f]{24}"')
        self.assertNotIn("SIGNING_KEY=", private)  # the value is never printed
        # Payments: deploy --fund on the embedded chain, calls, a host's own claim raises its balance, gas shown.
        paid = out.split("payments:", 1)[1].split("all daemons stopped", 1)[0]
        self.assertRegex(paid, r"funded    0\.02 ETH on escrow 0x[0-9a-fA-F]{40}")
        self.assertRegex(paid, r"balance\s+0\.02 ETH on escrow")  # orb info --eth-rpc
        self.assertIn("HTTP/1.1 402 Payment Required", paid)  # the call past the deposit
        self.assertIn('"code":"payment-required"', paid)
        self.assertIn("counted 20 of these calls for vouchers and 1 unauthorized one(s)", paid)
        self.assertIn("orb.toml ends with [payment] required = true", paid)
        self.assertIn("20 of 20 calls with the token through the gateway answered 200", paid)
        self.assertRegex(paid, r"peer-\S+'s balance rose by 0\.\d+ ETH: paid 0\.\d+ for \d+ request\(s\)")
        self.assertRegex(paid, r"claim gas \d{4,}")
        self.assertRegex(paid, r"the escrow paid 0\.020000 ETH \(20 requests")
        self.assertIn("all daemons stopped", out)
        # The jail act: a function runs, a hostile one is stopped by seccomp.
        self.assertIn('adder   OK {"sum": 5, "request": "call-0"}', out)
        self.assertIn("escaper KILLED_BY_POLICY: seccomp stopped forbidden syscall socket", out)
        self.assertNotIn("Traceback", out + result.stderr)


class TranscriptTests(TestCase):
    def test_lines_name_codes(self):
        """A transcript line names an ERROR's code (code=unsupported) and marks a response frame as a response."""
        from orb.protocol import messages as m
        from orb.protocol.frame import Frame
        from orb.transcript import frame_line

        line = frame_line(Frame(1, 1, 5, m.Error(code=4, ref_request_id=5, text="nope")))
        self.assertIn("code=unsupported", line)
        self.assertIn("response", line)


class PluginTests(TestCase):
    def test_twistd_knows_both_daemons(self):
        """twistd knows orb-tracker and orb-peer, and each one's --help lists its options."""
        for name, expected in (("orb-tracker", "--join"), ("orb-peer", "--tracker")):
            result = run([TWISTD, name, "--help"])
            self.assertEqual(result.returncode, 0, result.stderr)
            for option in ("--data-dir", "--listen", "--network", "--advertise", expected):
                self.assertIn(option, result.stdout)
        self.assertIn("--http", run([TWISTD, "orb-tracker", "--help"]).stdout)


class PaidRequestsTests(TestCase):
    def test_a_hosts_second_claim_is_not_counted_twice(self):
        """The demo's paid requests take each channel's latest cumulative counter: claims at 10 then 19 paid 19."""
        from orb.demo import paid_requests
        from orb.pay.contract import Claim

        claims = [{"claim": Claim(host, "s", requests, 0, 0, 0, 1, "0x", 0)}
                  for host, requests in (("h1", 10), ("h1", 19), ("h2", 1))]
        self.assertEqual(paid_requests(claims), 20)
