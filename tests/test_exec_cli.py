"""``orb sandbox-run`` and ``orb sandbox-check`` as a user runs them."""

import json
import os
import subprocess
import sys

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from orb.cli.main import main

from .hostile._support import missing_layers_reason

HOSTILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hostile", "functions")


def orb(*args, stdin=b""):
    """Run the real ``orb`` command in a child process (sandbox-run runs a reactor)."""
    p = subprocess.run([sys.executable, "-c", "import sys; from orb.cli.main import main; sys.exit(main())",
                        *args], input=stdin, capture_output=True, timeout=60)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


class ArgumentErrorTests(SynchronousTestCase):
    """Bad arguments: one clear line on stderr, exit status 2, no traceback."""

    def check(self, argv, needle):
        from io import StringIO
        from unittest import mock

        err = StringIO()
        with mock.patch("sys.stderr", err):
            code = main(argv)
        self.assertEqual(code, 2)
        text = err.getvalue()
        self.assertEqual(text.count("\n"), 1, text)
        self.assertIn(needle, text)
        self.assertNotIn("Traceback", text)

    def test_no_command(self):
        """orb with no command prints usage and exits 2."""
        self.check([], "a command is required")

    def test_unknown_command(self):
        """An unknown command is a usage error."""
        self.check(["frobnicate"], "invalid choice")

    def test_bad_runtime(self):
        """sandbox-run refuses a runtime it does not know."""
        self.check(["sandbox-run", "--runtime", "ruby", "--entry", "x"], "invalid choice: 'ruby'")

    def test_missing_entry_argument(self):
        """sandbox-run without --entry is a usage error."""
        self.check(["sandbox-run", "--runtime", "python"], "--entry")

    def test_entry_does_not_exist(self):
        """sandbox-run names a missing entry file."""
        self.check(["sandbox-run", "--runtime", "python", "--entry", "/no/such/file.py"], "no such file")

    def test_bad_timeout_and_memory(self):
        """Out-of-range --timeout and --memory are usage errors."""
        entry = os.path.join(HOSTILE, "benign.py")
        self.check(["sandbox-run", "--runtime", "python", "--entry", entry, "--timeout", "soon"],
                   "not a number")
        self.check(["sandbox-run", "--runtime", "python", "--entry", entry, "--timeout", "-1"],
                   "more than 0")
        self.check(["sandbox-run", "--runtime", "python", "--entry", entry, "--memory", "1"],
                   "between 16")

    def test_dir_without_main(self):
        """A dir without main.py (or main) is a usage error naming the file."""
        self.check(["sandbox-run", "--runtime", "exec", "--entry", HOSTILE], "without main")


class SandboxCommandTests(SynchronousTestCase):
    def setUp(self):
        reason = missing_layers_reason()
        if reason:
            raise SkipTest(reason)

    def test_sandbox_check_lists_layers(self):
        """sandbox-check lists every layer and exits 0 when all required ones are there."""
        code, out, _err = orb("sandbox-check")
        self.assertEqual(code, 0)
        identity = "uid_pool" if os.geteuid() == 0 else "userns"
        for layer in ("seccomp", "landlock_fs", "landlock_net", "landlock_scope", "netns", "pidns",
                      "call_namespaces", "root", "pivot_root", identity, "cgroup", "seccomp mode:"):
            self.assertIn(layer, out)
        self.assertIn("all required layers present", out)
        code, out, _err = orb("sandbox-check", "--json")
        self.assertEqual(json.loads(out)["missing"], [])

    def test_sandbox_run_ok_with_data(self):
        """sandbox-run prints the OK result as JSON and exits 0."""
        code, out, _err = orb("sandbox-run", "--runtime", "python", "--entry",
                              os.path.join(HOSTILE, "benign.py"), "--data", "hi")
        self.assertEqual(code, 0)
        doc = json.loads(out)
        self.assertEqual((doc["status"], doc["code"], doc["output"]), ("OK", 0, "still serving"))
        self.assertEqual(set(doc["timing"]), {"queue_ms", "boot_ms", "exec_ms"})
        self.assertTrue(doc["layers"]["seccomp"])

    def test_sandbox_run_reads_stdin_for_exec(self):
        """sandbox-run passes stdin to an exec program."""
        pkg = os.path.abspath(self.mktemp())
        os.makedirs(pkg)
        os.chmod(pkg, 0o755)
        with open(os.path.join(pkg, "main"), "w") as f:
            f.write("#!/bin/sh\nread x\necho \"<$x>\"\n")
        os.chmod(os.path.join(pkg, "main"), 0o755)
        code, out, _err = orb("sandbox-run", "--runtime", "exec", "--entry", pkg, stdin=b"from stdin\n")
        self.assertEqual(code, 0, out)
        self.assertEqual(json.loads(out)["output"], "<from stdin>\n")

    def test_sandbox_run_reports_policy_kill(self):
        """sandbox-run reports KILLED_BY_POLICY and exits 1."""
        code, out, _err = orb("sandbox-run", "--runtime", "python", "--entry",
                              os.path.join(HOSTILE, "net_tcp.py"), "--data", "{}")
        self.assertEqual(code, 1)
        doc = json.loads(out)
        self.assertEqual(doc["status"], "KILLED_BY_POLICY")
        self.assertIn("forbidden syscall", doc["message"])

    def test_sandbox_run_timeout(self):
        """sandbox-run reports TIMEOUT for a function that runs too long."""
        code, out, _err = orb("sandbox-run", "--runtime", "python", "--entry",
                              os.path.join(HOSTILE, "sleep_forever.py"), "--timeout", "0.3")
        self.assertEqual((code, json.loads(out)["status"]), (1, "TIMEOUT"))
