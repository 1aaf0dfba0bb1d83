# -*- test-case-name: tests.test_exec_cgroup -*-
"""
Per-call cgroups: a memory bound that counts everything the call makes
resident (its heap, shared and tmpfs pages, page tables), a task bound
(processes and threads), and an out-of-memory count the supervisor reads to
give the MEMORY verdict.  cgroup v1 (one hierarchy per controller) and v2
(one unified tree) both work.

The zygote makes one dir of its own (``orb-zygote-<pid>-<random>``) under
its own cgroup in each hierarchy it uses, and one dir below that per jailed
child (:class:`CallGroup`): created and joined by the child before its call
exists, limited when the call is known, read and removed once the child is
reaped.  Nothing here forks, and every operation is a few writes to
cgroupfs files.

A host without a writable cgroup (a non-root peer, a container without
delegation) uses none: :meth:`Cgroups.setup` says why, and the jail keeps
its other bounds (RLIMIT_AS, RLIMIT_NPROC in the call's own uid or user
namespace, the seccomp thread-only clone rule).
"""

import errno
import os

#: Controllers the jail uses, if it can.
CONTROLLERS = ("memory", "pids")
PREFIX = "orb-zygote-"


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _write(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo.
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1:i + 4].isdigit() and len(field[i + 1:i + 4]) == 3:
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def discover(mountinfo: str, proc_cgroup: str) -> dict:
    """Where our own cgroup is, per controller: ``{"memory": (1, dir),
    "pids": (1, dir)}`` for v1 hierarchies, ``{"v2": (2, dir)}`` for the
    unified tree.  ``mountinfo`` and ``proc_cgroup`` are the texts of
    ``/proc/self/mountinfo`` and ``/proc/self/cgroup``."""
    own = {}  # controller (or "" for v2) -> path inside the hierarchy
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _hid, names, path = parts
        if names == "":
            own[""] = path
        for name in names.split(","):
            if name:
                own[name] = path
    found = {}
    for line in mountinfo.splitlines():
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        pre, post = line.split(" - ", 1)
        pre, post = pre.split(), post.split()
        if len(pre) < 5 or len(post) < 3:
            continue
        root, mountpoint, fstype, options = _unescape(pre[3]), _unescape(pre[4]), post[0], post[2]
        if fstype == "cgroup2" and "" in own and "v2" not in found:
            rel = os.path.relpath(own[""], root) if own[""].startswith(root) else None
            if rel is not None:
                found["v2"] = (2, os.path.normpath(os.path.join(mountpoint, rel)))
        elif fstype == "cgroup":
            for name in options.split(","):
                if name in CONTROLLERS and name in own and name not in found:
                    path = own[name]
                    if path == root or path.startswith(root.rstrip("/") + "/"):
                        rel = os.path.relpath(path, root)
                        found[name] = (1, os.path.normpath(os.path.join(mountpoint, rel)))
    return found


class CallGroup:
    """One jailed child's cgroup dirs (one per v1 hierarchy, or one v2 dir)."""

    def __init__(self, dirs: dict, version: dict):
        self.dirs = dirs  # controller -> dir ("memory", "pids"); v2: both the same dir
        self.version = version  # controller -> 1 or 2
        self.removed = False

    def _unique_dirs(self) -> list[str]:
        out = []
        for d in self.dirs.values():
            if d not in out:
                out.append(d)
        return out

    def attach(self, pid: int) -> None:
        """Move ``pid`` (and all its threads) into every dir."""
        for d in self._unique_dirs():
            _write(os.path.join(d, "cgroup.procs"), str(pid))

    def open_procs(self) -> list[int]:
        """``cgroup.procs`` of every dir, open for writing: a child given
        these joins by writing ``0`` (itself)."""
        fds = []
        try:
            for d in self._unique_dirs():
                fds.append(os.open(os.path.join(d, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC))
        except OSError:
            for fd in fds:
                os.close(fd)
            raise
        return fds

    def limit(self, memory_bytes: int, tasks: int) -> None:
        d = self.dirs.get("memory")
        if d is not None:
            if self.version["memory"] == 1:
                _write(os.path.join(d, "memory.limit_in_bytes"), str(memory_bytes))
                try:  # no swap beyond the limit either (absent without swap accounting)
                    _write(os.path.join(d, "memory.memsw.limit_in_bytes"), str(memory_bytes))
                except FileNotFoundError:
                    pass
            else:
                _write(os.path.join(d, "memory.max"), str(memory_bytes))
                for name, value in (("memory.swap.max", "0"), ("memory.oom.group", "1")):
                    path = os.path.join(d, name)
                    if os.path.exists(path):
                        _write(path, value)
        d = self.dirs.get("pids")
        if d is not None:
            _write(os.path.join(d, "pids.max"), str(tasks))

    def oom_kills(self) -> int:
        """How many processes the kernel's OOM killer ended in this group."""
        d = self.dirs.get("memory")
        if d is None:
            return 0
        name = "memory.oom_control" if self.version["memory"] == 1 else "memory.events"
        try:
            text = _read(os.path.join(d, name))
        except OSError:
            return 0
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                try:
                    return int(value)
                except ValueError:
                    return 0
        return 0

    def remove(self) -> bool:
        """rmdir every dir; False if one is still busy (a task not yet gone)."""
        ok = True
        for d in self._unique_dirs():
            try:
                os.rmdir(d)
            except FileNotFoundError:
                pass
            except OSError:
                ok = False
        self.removed = ok
        return ok


class Cgroups:
    """The zygote's cgroup dirs and the per-child groups below them."""

    def __init__(self):
        self.parents: dict = {}  # controller -> our dir under our own cgroup
        self.version: dict = {}  # controller -> 1 or 2
        self.in_use: list[str] = []  # e.g. ["memory (v1)", "pids (v1)"]
        self.why_not: dict = {}  # controller -> reason it is not used
        self.seq = 0

    @property
    def memory(self) -> bool:
        return "memory" in self.parents

    @property
    def pids(self) -> bool:
        return "pids" in self.parents

    def setup(self, tag: str, mountinfo: str | None = None, proc_cgroup: str | None = None) -> None:
        """Make our dirs and check that a child dir can be made, limited and
        removed, for each controller; record why not where it cannot."""
        try:
            mountinfo = _read("/proc/self/mountinfo") if mountinfo is None else mountinfo
            proc_cgroup = _read("/proc/self/cgroup") if proc_cgroup is None else proc_cgroup
        except OSError as e:
            for name in CONTROLLERS:
                self.why_not[name] = f"cannot read /proc/self: {e.strerror}"
            return
        found = discover(mountinfo, proc_cgroup)
        v2 = found.get("v2")
        for name in CONTROLLERS:
            if name in found:
                self._try(name, 1, found[name][1], tag)
            elif v2 is not None:
                self._try(name, 2, v2[1], tag)
            else:
                self.why_not[name] = "no hierarchy with this controller is mounted"

    def _try(self, name: str, version: int, base: str, tag: str) -> None:
        parent = os.path.join(base, PREFIX + tag)
        try:
            if version == 2:
                self._enable_v2(name, base, parent)
            else:
                os.makedirs(parent, exist_ok=True)
            probe = CallGroup({name: os.path.join(parent, "probe")}, {name: version})
            os.mkdir(probe.dirs[name])
            try:
                probe.limit(64 * 1024 * 1024, 64)
            finally:
                probe.remove()
        except OSError as e:
            self.why_not[name] = (f"cgroup v{version} {name} at {base} is not usable: "
                                  f"{e.strerror or e}")
            if version == 1 or not self.parents:
                try:
                    os.rmdir(parent)
                except OSError:
                    pass
            return
        self.parents[name] = parent
        self.version[name] = version
        self.in_use.append(f"{name} (v{version})")
        sweep_dead(base, keep=parent)

    @staticmethod
    def _enable_v2(name: str, base: str, parent: str) -> None:
        available = _read(os.path.join(base, "cgroup.controllers")).split()
        if name not in available:
            raise OSError(errno.ENOENT, f"controller {name} is not delegated to {base}")
        enabled = _read(os.path.join(base, "cgroup.subtree_control")).split()
        if name not in enabled:
            # Fails (EBUSY) while our own cgroup holds processes: the
            # no-internal-processes rule.  The peer's service manager has to
            # delegate a subtree with the controller on.
            _write(os.path.join(base, "cgroup.subtree_control"), "+" + name)
        os.makedirs(parent, exist_ok=True)
        if name not in _read(os.path.join(parent, "cgroup.subtree_control")).split():
            _write(os.path.join(parent, "cgroup.subtree_control"), "+" + name)

    def new_group(self) -> CallGroup | None:
        """A fresh group (dirs made, no limits yet), or None when none is used."""
        if not self.parents:
            return None
        self.seq += 1
        leaf = f"c{self.seq}"
        dirs, made = {}, {}
        try:
            for name, parent in self.parents.items():
                d = os.path.join(parent, leaf)
                if d not in made:
                    os.mkdir(d)
                    made[d] = True
                dirs[name] = d
        except OSError:
            for d in made:
                try:
                    os.rmdir(d)
                except OSError:
                    pass
            raise
        return CallGroup(dirs, dict(self.version))

    def report(self) -> str:
        used = ", ".join(self.in_use) or "none"
        why = "; ".join(f"{name}: {text}" for name, text in self.why_not.items())
        out = f"controllers in use: {used}"
        if why:
            out += f"; not used: {why}"
        return out

    def close(self) -> None:
        """Remove our dirs (every child group must be gone already)."""
        for parent in set(self.parents.values()):
            remove_tree(parent)


def sweep_dead(base: str, keep: str) -> None:
    """Remove what zygotes that were killed left under ``base``: their
    children were still dying when they (and the peer) last looked.  Only
    dirs of a zygote that no longer runs, and only empty cgroups (rmdir
    refuses any other)."""
    try:
        names = [e.name for e in os.scandir(base) if e.name.startswith(PREFIX)]
    except OSError:
        return
    for name in names:
        path = os.path.join(base, name)
        if path == keep:
            continue
        try:
            pid = int(name[len(PREFIX):].split("-", 1)[0])
            os.kill(pid, 0)
            continue  # its zygote runs: not ours to touch
        except ProcessLookupError:
            remove_tree(path)
        except (ValueError, OSError):
            continue


def remove_tree(parent: str) -> None:
    """rmdir ``parent`` and every cgroup dir below it, deepest first, without
    recursion.  Dirs still holding a task stay."""
    stack, order = [parent], []
    while stack:
        d = stack.pop()
        order.append(d)
        try:
            with os.scandir(d) as it:
                stack.extend(e.path for e in it if e.is_dir(follow_symlinks=False))
        except OSError:
            pass
    for d in reversed(order):
        try:
            os.rmdir(d)
        except OSError:
            pass
