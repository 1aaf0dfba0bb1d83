"""The jail's building blocks: Landlock and seccomp helpers, the layer probe."""

import os
import sys

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from orb.exec import _landlock, _seccomp


class LandlockTests(SynchronousTestCase):
    def test_handled_rights_grow_with_the_abi(self):
        """Each Landlock ABI handles the rights it knows."""
        self.assertEqual(_landlock.handled_fs(1), (1 << 13) - 1)
        self.assertTrue(_landlock.handled_fs(2) & _landlock.FS_REFER)
        self.assertTrue(_landlock.handled_fs(3) & _landlock.FS_TRUNCATE)
        self.assertFalse(_landlock.handled_fs(4) & _landlock.FS_IOCTL_DEV)
        self.assertTrue(_landlock.handled_fs(5) & _landlock.FS_IOCTL_DEV)
        self.assertEqual(_landlock.handled_net(3), 0)
        self.assertEqual(_landlock.handled_net(4),
                         _landlock.NET_BIND_TCP | _landlock.NET_CONNECT_TCP)
        self.assertEqual(_landlock.scopes(5), 0)
        self.assertEqual(_landlock.scopes(6),
                         _landlock.SCOPE_SIGNAL | _landlock.SCOPE_ABSTRACT_UNIX_SOCKET)

    def test_kernel_abi_and_ruleset(self):
        """The kernel's Landlock ABI is read and a ruleset can be built."""
        abi = _landlock.abi_version()
        if abi < 1:
            raise SkipTest("this kernel has no Landlock")
        rs = _landlock.create_ruleset(abi)
        try:
            fd, is_dir = _landlock.open_path("/usr/lib")
            try:
                self.assertTrue(is_dir)
                _landlock.add_path_rule(rs, fd, _landlock.READ_ONLY, abi, is_dir)
            finally:
                os.close(fd)
        finally:
            os.close(rs)

    def test_open_path_absent(self):
        """A missing path gives None, not an exception."""
        self.assertIsNone(_landlock.open_path("/no/such/path/at/all"))


class SeccompTests(SynchronousTestCase):
    def setUp(self):
        if not _seccomp.available():
            raise SkipTest("seccomp filters or libseccomp unavailable")

    def test_policies_compile_to_bpf(self):
        """Both seccomp policies compile to classic BPF."""
        for runtime in ("python", "exec"):
            prog = _seccomp.compile_policy(runtime)
            self.assertEqual(len(prog) % 8, 0)
            self.assertGreater(len(prog), 8)

    def test_unknown_runtime(self):
        """An unknown runtime has no seccomp policy."""
        self.assertRaises(ValueError, _seccomp.compile_policy, "ruby")

    def test_syscall_names(self):
        """Syscall numbers resolve to their names."""
        if sys.platform != "linux" or os.uname().machine != "x86_64":
            raise SkipTest("syscall numbers below are x86_64")
        self.assertEqual(_seccomp.syscall_name(41), "socket")
        self.assertEqual(_seccomp.syscall_name(101), "ptrace")
        self.assertEqual(_seccomp.syscall_name(59), "execve")

    def test_recent_syscalls_are_named_even_if_libseccomp_is_older(self):
        """listmount, statmount and the other recent syscalls get names; an unknown number says so."""
        self.assertEqual(_seccomp.syscall_name(458), "listmount")
        self.assertEqual(_seccomp.syscall_name(457), "statmount")
        self.assertEqual(_seccomp._recent_name(462, "aarch64"), "mseal")
        self.assertEqual(_seccomp._recent_name(335, "x86_64"), "uretprobe")
        self.assertIsNone(_seccomp._recent_name(335, "aarch64"))
        self.assertEqual(_seccomp.syscall_name(100000), "syscall 100000")

    def test_load_in_a_child_blocks_sockets(self):
        """The exec policy makes socket() fail with EACCES."""
        prog = _seccomp.compile_policy("exec")
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            try:
                import socket

                _seccomp.set_no_new_privs()
                _seccomp.load(prog)
                try:
                    socket.socket()
                    os._exit(1)
                except PermissionError:
                    os._exit(0)
            finally:
                os._exit(2)
        _, status = os.waitpid(pid, 0)
        self.assertEqual(os.waitstatus_to_exitcode(status), 0)


class ProbeTests(SynchronousTestCase):
    def test_probe_reports_every_layer(self):
        """The probe reports every layer, and missing ones are exactly the absent required ones."""
        from orb.cli._sandbox import probe_layers
        from orb.exec._zygote import REQUIRED_LAYERS

        report = probe_layers()
        identity = "uid_pool" if os.geteuid() == 0 else "userns"
        for name in REQUIRED_LAYERS + ("netns", "cgroup", identity):
            self.assertIn(name, report["layers"])
        self.assertEqual(report["missing"],
                         [n for n in REQUIRED_LAYERS + (identity,) if not report["layers"][n]])


class LayeringTests(SynchronousTestCase):
    def test_exec_imports_only_protocol_codes_from_orb(self):
        """orb/exec/ imports nothing from orb outside itself but orb.protocol.codes (a leaf library)."""
        import ast
        import pathlib

        import orb.exec

        root = pathlib.Path(orb.exec.__file__).parent
        outside = set()
        for path in root.glob("*.py"):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom):
                    if node.level == 0 and (node.module or "").startswith("orb"):
                        name = node.module
                    elif node.level >= 2:
                        name = "orb." + (node.module or "")
                    else:
                        continue
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names if a.name.startswith("orb")]
                    if not names:
                        continue
                    name = names[0]
                else:
                    continue
                if not name.startswith("orb.exec"):
                    outside.add((path.name, name))
        self.assertEqual(outside, {("_executor.py", "orb.protocol.codes")})


class UidLeaseTests(SynchronousTestCase):
    """Per-call uids are exclusive across executors on one host (a tracker and peers, or two test runs)."""

    def test_two_pools_never_hand_out_the_same_uid(self):
        """Two pools over one range and one lease directory never hold the same uid at once; a returned uid is free again."""
        from orb.exec._ns import UidPool

        lease_dir = self.mktemp()
        a, b = UidPool(50_000, 4, lease_dir), UidPool(50_000, 4, lease_dir)
        held_a = [a.take() for _ in range(2)]
        held_b = [b.take() for _ in range(2)]
        self.assertEqual(len(set(held_a + held_b)), 4)
        self.assertIsNone(b.take())  # the range is used up between them
        a.give_back(held_a[0])
        self.assertEqual(b.take(), held_a[0])

    def test_an_unsafe_lease_directory_is_not_used(self):
        """A lease directory others can write is not trusted: the pool works alone rather than trust it."""
        from orb.exec._ns import UidPool

        lease_dir = self.mktemp()
        os.makedirs(lease_dir)
        os.chmod(lease_dir, 0o777)
        pool = UidPool(50_000, 2, lease_dir)
        self.assertIsNone(pool._lease_dir)
        self.assertIsNotNone(pool.take())
