"""
The per-call cgroup plumbing against fake cgroupfs trees (plain dirs and
files): where our cgroup is, what a call's limits write, how an OOM kill
is read, and removal without recursion.
"""

import os

from twisted.trial.unittest import SynchronousTestCase

from orb.exec import _cgroup

MOUNTINFO_V1 = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
CGROUP_V1 = "8:pids:/\n4:memory:/process_api/abc\n0::/\n"

MOUNTINFO_V2 = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
CGROUP_V2 = "0::/user.slice/orb-peer.service\n"


class DiscoverTests(SynchronousTestCase):
    def test_v1_controllers_at_their_own_cgroup(self):
        """On a v1 host, memory and pids are found at this process's own cgroup in each hierarchy."""
        found = _cgroup.discover(MOUNTINFO_V1, CGROUP_V1)
        self.assertEqual(found["memory"], (1, "/sys/fs/cgroup/memory/process_api/abc"))
        self.assertEqual(found["pids"], (1, "/sys/fs/cgroup/pids"))
        self.assertEqual(found["v2"], (2, "/sys/fs/cgroup/unified"))

    def test_v2_unified_tree(self):
        """On a v2 host, the unified tree at this process's cgroup is found."""
        found = _cgroup.discover(MOUNTINFO_V2, CGROUP_V2)
        self.assertEqual(found, {"v2": (2, "/sys/fs/cgroup/user.slice/orb-peer.service")})

    def test_mount_root_below_the_hierarchy_root(self):
        """A mount of a subtree (a cgroup namespace) maps our path below the mount's root."""
        mountinfo = "35 31 0:32 /process_api /cg/memory rw - cgroup cgroup rw,memory\n"
        found = _cgroup.discover(mountinfo, "4:memory:/process_api/abc\n")
        self.assertEqual(found["memory"], (1, "/cg/memory/abc"))

    def test_garbage_finds_nothing(self):
        """Unreadable lines are skipped, not fatal."""
        self.assertEqual(_cgroup.discover("junk\n - \n", "x\n"), {})


class FakeTreeTests(SynchronousTestCase):
    def make_v1(self):
        root = self.mktemp()
        mem = os.path.join(root, "memory", "c1")
        pids = os.path.join(root, "pids", "c1")
        for d in (mem, pids):
            os.makedirs(d)
        for name in ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes", "cgroup.procs"):
            open(os.path.join(mem, name), "w").close()
        for name in ("pids.max", "cgroup.procs"):
            open(os.path.join(pids, name), "w").close()
        return _cgroup.CallGroup({"memory": mem, "pids": pids}, {"memory": 1, "pids": 1})

    def read(self, path):
        with open(path) as f:
            return f.read()

    def test_v1_limits_and_attach(self):
        """A call's limits go to memory (and memsw, so no swap past it) and pids; attach writes the pid to both."""
        group = self.make_v1()
        group.limit(128 * 1024 * 1024, 64)
        group.attach(4242)
        mem, pids = group.dirs["memory"], group.dirs["pids"]
        self.assertEqual(self.read(mem + "/memory.limit_in_bytes"), str(128 * 1024 * 1024))
        self.assertEqual(self.read(mem + "/memory.memsw.limit_in_bytes"), str(128 * 1024 * 1024))
        self.assertEqual(self.read(pids + "/pids.max"), "64")
        self.assertEqual(self.read(mem + "/cgroup.procs"), "4242")
        self.assertEqual(self.read(pids + "/cgroup.procs"), "4242")

    def test_oom_kills_read_from_v1_and_v2(self):
        """The OOM-kill count comes from memory.oom_control (v1) or memory.events (v2)."""
        group = self.make_v1()
        with open(group.dirs["memory"] + "/memory.oom_control", "w") as f:
            f.write("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
        self.assertEqual(group.oom_kills(), 2)
        d = self.mktemp()
        os.makedirs(d)
        with open(d + "/memory.events", "w") as f:
            f.write("low 0\nhigh 0\nmax 7\noom 1\noom_kill 1\n")
        v2 = _cgroup.CallGroup({"memory": d, "pids": d}, {"memory": 2, "pids": 2})
        self.assertEqual(v2.oom_kills(), 1)

    def test_no_oom_file_is_no_oom(self):
        """Without the counter file the count is 0 (no verdict from a missing witness)."""
        group = _cgroup.CallGroup({"memory": self.mktemp()}, {"memory": 1})
        self.assertEqual(group.oom_kills(), 0)

    def test_remove_tree_handles_deep_trees(self):
        """Removing our cgroup dirs needs no recursion, however deep."""
        root = os.path.abspath(self.mktemp())
        os.makedirs(root)
        path = root
        for _ in range(1000):
            path = os.path.join(path, "d")
            os.mkdir(path)
        _cgroup.remove_tree(root)
        self.assertFalse(os.path.exists(root))


class SweepTests(SynchronousTestCase):
    def test_dirs_of_dead_zygotes_are_swept_live_ones_kept(self):
        """A killed zygote's leftover cgroup dirs are removed by the next one; a running zygote's stay."""
        base = os.path.abspath(self.mktemp())
        dead = os.path.join(base, _cgroup.PREFIX + "999999999-aa")  # no such pid
        live = os.path.join(base, _cgroup.PREFIX + f"{os.getpid()}-bb")
        ours = os.path.join(base, _cgroup.PREFIX + "1-cc")
        for d in (dead + "/c1", live + "/c1", ours + "/c2", base + "/unrelated"):
            os.makedirs(d)
        _cgroup.sweep_dead(base, keep=ours)
        self.assertEqual(sorted(os.listdir(base)),
                         sorted([os.path.basename(live), os.path.basename(ours), "unrelated"]))


class SetupTests(SynchronousTestCase):
    def test_no_hierarchy_says_why(self):
        """Without a mounted cgroup hierarchy nothing is used and the report says why."""
        cg = _cgroup.Cgroups()
        cg.setup("t", mountinfo="", proc_cgroup="")
        self.assertEqual((cg.memory, cg.pids), (False, False))
        self.assertIn("no hierarchy", cg.report())
        self.assertIsNone(cg.new_group())

    def test_unusable_hierarchy_says_why(self):
        """A hierarchy we cannot use is not used, leaves nothing behind, and the report names the error."""
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        os.chmod(base, 0o555)
        self.addCleanup(os.chmod, base, 0o755)
        mountinfo = f"35 31 0:32 / {base} rw - cgroup cgroup rw,memory\n"
        cg = _cgroup.Cgroups()
        cg.setup("t", mountinfo=mountinfo, proc_cgroup="4:memory:/\n")
        # (root may write the dir, but a plain dir lacks the limit files)
        self.assertFalse(cg.memory)
        self.assertIn("not usable", cg.why_not["memory"])
        self.assertEqual(os.listdir(base), [])
