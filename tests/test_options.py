"""
The daemons' options, parsed without starting anything: what a person
typing `twistd orb-tracker ...` or `twistd orb-peer ...` gets back, one
actionable line per mistake, and the frozen config a good command line
becomes. The running daemons are covered by test_network.
"""

import os
import socket

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from orb import _options as opt
from orb.peer import tap as peer_tap
from orb.tracker import tap as tracker_tap


class HostPortTests(SynchronousTestCase):
    def test_ipv4_and_bracketed_ipv6(self):
        """HOST:PORT takes an IPv4 address or a bracketed IPv6 address."""
        self.assertEqual(opt.parse_hostport("127.0.0.1:7400"), ("127.0.0.1", 7400))
        self.assertEqual(opt.parse_hostport("[::1]:7400"), ("::1", 7400))

    def test_bad_hostports_name_the_problem(self):
        """A bad address says what is wrong with it: the form, the port range, or a host that is not an IP."""
        cases = {
            "localhost": "is not HOST:PORT",
            "127.0.0.1:0": "port must be 1..65535",
            "127.0.0.1:70000": "port must be 1..65535",
            "example.org:7400": "is not an IP address",
            "::1:7400": "is not HOST:PORT",
        }
        for text, expected in cases.items():
            e = self.assertRaises(usage.UsageError, opt.parse_hostport, text, "--join")
            self.assertIn(expected, str(e), text)
            self.assertIn("--join", str(e))


class EndpointTests(SynchronousTestCase):
    def test_tcp_endpoint_is_accepted(self):
        """A tcp: endpoint string passes unchanged and yields its interface and port."""
        text = "tcp:7400:interface=127.0.0.1"
        self.assertEqual(opt.check_endpoint(text, "--listen"), text)
        self.assertEqual(opt.listen_address(text), ("127.0.0.1", 7400))

    def test_other_endpoint_kinds_are_refused(self):
        """An endpoint kind ORB cannot serve (ssl:, a typo) is refused with the option's name."""
        for text in ("ssl:7400", "tcpp:7400", "tcp:notaport"):
            e = self.assertRaises(usage.UsageError, opt.check_endpoint, text, "--listen")
            self.assertIn("--listen", str(e))


class DaemonOptionsTests(SynchronousTestCase):
    def free_port(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        return port

    def test_tracker_options_become_a_frozen_config(self):
        """A good tracker command line becomes a TrackerConfig with its joins, TTL and network."""
        options = tracker_tap.Options()
        data_dir = self.mktemp()
        options.parseOptions([
            "--data-dir", data_dir, "--network", "devnet", "--join", "127.0.0.1:7500",
            "--listen", f"tcp:{self.free_port()}:interface=127.0.0.1",
            "--http", f"tcp:{self.free_port()}:interface=127.0.0.1", "--peer-ttl", "30",
        ])
        node = options.node_config("orb-tracker/test")
        self.assertEqual(node.bootstrap, (("127.0.0.1", 7500),))
        self.assertEqual(node.network, "devnet")
        self.assertEqual(node.max_inbound, 2000)
        self.assertEqual(options["peer-ttl"], 30.0)
        self.assertTrue(os.path.isdir(data_dir))

    def test_peer_defaults(self):
        """A peer keeps 8 outbound peers and 2 trackers, and accepts 117 inbound, unless told otherwise."""
        options = peer_tap.Options()
        options.parseOptions(["--data-dir", self.mktemp(), "--listen", f"tcp:{self.free_port()}:interface=127.0.0.1"])
        self.assertEqual((options["outbound-peers"], options["outbound-trackers"]), (8, 2))
        self.assertEqual(options.node_config("orb-peer/test").max_inbound, 117)

    def test_peer_hosting_policy_options(self):
        """The hosting options reach the policy; the defaults are those --help states."""
        import sys

        from orb.peer import hosting as ho

        listen = ["--listen", f"tcp:{self.free_port()}:interface=127.0.0.1"]
        options = peer_tap.Options()
        options.parseOptions(["--data-dir", self.mktemp()] + listen)
        self.assertEqual(options.hosting_policy(), ho.HostingPolicy(cache_tag=sys.implementation.cache_tag))
        options = peer_tap.Options()
        options.parseOptions(["--data-dir", self.mktemp(), "--max-functions", "5", "--max-disk-mb", "20",
                              "--runtime", "python", "--max-memory-mb", "128", "--python-tag", "cpython-311"] + listen)
        self.assertEqual(options.hosting_policy(), ho.HostingPolicy(
            max_functions=5, max_disk_bytes=20 * 1024 * 1024, runtimes=frozenset({"python"}), max_memory_mb=128,
            cache_tag="cpython-311"))
        self.assertIn("[default: 100]", str(peer_tap.Options()))

    def test_unknown_runtime_is_refused(self):
        """--runtime takes python or exec, and says so."""
        e = self.assertRaises(SystemExit, peer_tap.Options().parseOptions,
                              ["--data-dir", self.mktemp(), "--runtime", "ruby"])
        self.assertEqual(str(e), "orb-peer: error: --runtime 'ruby': use one of python, exec")

    def test_fetch_rate_takes_binary_suffixes_and_refuses_nonsense(self):
        """--fetch-rate 256K is 262144 bytes a second; no limit by default; '10 mbit' and 10 are refused."""
        listen = ["--listen", f"tcp:{self.free_port()}:interface=127.0.0.1"]
        options = peer_tap.Options()
        options.parseOptions(["--data-dir", self.mktemp()] + listen)
        self.assertIsNone(options["fetch-rate"])
        options = peer_tap.Options()
        options.parseOptions(["--data-dir", self.mktemp(), "--fetch-rate", "256K"] + listen)
        self.assertEqual(options["fetch-rate"], 262144)
        for bad, why in (("10 mbit", "like 262144, 256K or 2M"), ("10", "at least 1024 bytes a second")):
            e = self.assertRaises(SystemExit, peer_tap.Options().parseOptions,
                                  ["--data-dir", self.mktemp(), "--fetch-rate", bad] + listen)
            self.assertIn(why, str(e))

    def test_a_mistake_is_one_line_and_exit(self):
        """A bad value ends option parsing with one 'orb-peer: error: ...' line, no usage dump."""
        options = peer_tap.Options()
        e = self.assertRaises(SystemExit, options.parseOptions,
                              ["--data-dir", self.mktemp(), "--outbound-peers", "many"])
        self.assertEqual(str(e), "orb-peer: error: --outbound-peers must be an integer, not 'many'")

    def test_bad_network_name(self):
        """A network name with capitals or spaces is refused with the rule it breaks."""
        e = self.assertRaises(usage.UsageError, opt.check_network, "My Net")
        self.assertIn("lowercase letters, digits and '-'", str(e))

    def test_port_in_use_is_caught_before_start(self):
        """A listen port already taken is reported at option time with the address."""
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        self.addCleanup(s.close)
        port = s.getsockname()[1]
        options = peer_tap.Options()
        e = self.assertRaises(SystemExit, options.parseOptions,
                              ["--data-dir", self.mktemp(), "--listen", f"tcp:{port}:interface=127.0.0.1"])
        self.assertIn(f"cannot listen on 127.0.0.1:{port}", str(e))


class AdmissionOptionTests(SynchronousTestCase):
    def test_join_may_pin_a_node_id(self):
        """--join NODEID@HOST:PORT pins the node id expected there; plain HOST:PORT pins nothing."""
        node_id = "ab" * 32
        self.assertEqual(opt.parse_join(f"{node_id}@127.0.0.1:7400"), (bytes.fromhex(node_id), ("127.0.0.1", 7400)))
        self.assertEqual(opt.parse_join("127.0.0.1:7400"), (None, ("127.0.0.1", 7400)))

    def test_bad_node_ids_are_named(self):
        """A node id that is not 64 lowercase hex digits is refused with the option that carried it."""
        for text in ("abc@127.0.0.1:7400", ("AB" * 32) + "@127.0.0.1:7400"):
            e = self.assertRaises(usage.UsageError, opt.parse_join, text)
            self.assertIn("is not a node id (64 lowercase hex digits)", str(e))

    def test_tracker_collects_admitted_and_pinned_ids(self):
        """--admit and pinned --join ids reach the tracker's config; --join addresses stay its bootstrap."""
        options = tracker_tap.Options()
        a, b = "11" * 32, "22" * 32
        free = DaemonOptionsTests.free_port
        options.parseOptions([
            "--data-dir", self.mktemp(), "--admit", a, "--join", f"{b}@127.0.0.1:7500", "--join", "127.0.0.1:7501",
            "--listen", f"tcp:{free(self)}:interface=127.0.0.1", "--http", f"tcp:{free(self)}:interface=127.0.0.1",
        ])
        self.assertEqual(options["admit"], frozenset({bytes.fromhex(a)}))
        self.assertEqual(options["pinned"], ((("127.0.0.1", 7500), bytes.fromhex(b)),))
        self.assertEqual(options.node_config("t").bootstrap, (("127.0.0.1", 7500), ("127.0.0.1", 7501)))


class LogLevelTests(SynchronousTestCase):
    def test_debug_lines_only_with_the_flag(self):
        """Without --debug ORB's debug lines are dropped; with it they are logged."""
        from twisted.logger import LogLevel, capturedLogs

        from orb.net import logs

        self.addCleanup(logs.set_level, LogLevel.info)
        log = logs.orb_logger()
        seen = []
        for argv in ([], ["--debug"]):
            options = peer_tap.Options()
            options.parseOptions(["--data-dir", self.mktemp(), "--listen", "tcp:0:interface=127.0.0.1", *argv])
            options.apply_log_level()
            with capturedLogs() as events:
                log.debug("a debug line")
            seen.append(len(events))
        self.assertEqual(seen, [0, 1])
