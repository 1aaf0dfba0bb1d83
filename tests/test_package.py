"""
The canonical package (RFC 9.2): the same directory gives the same bytes
and fid on any machine, long paths split as specified, and anything that
is not a plain file is refused.
"""

import io
import os
import stat
import tarfile

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from orb.protocol import fid
from orb.protocol import package as p

MANIFEST = {"name": "adder", "runtime": "python", "entry": "main.py"}
FILES = {
    "main.py": (b"print(1)\n", True),
    "lib/util.py": (b"X = 1\n", False),
    "lib/data/" + "d" * 120 + "/table.txt": (b"", False),
    "README": (b"r" * 700, False),
}


def write_tree(root, order, umask=0o022, mtime=None):
    old = os.umask(umask)
    try:
        for path in order:
            data, executable = FILES[path]
            full = os.path.join(root, *path.split("/"))
            os.makedirs(os.path.dirname(full), exist_ok=True)
            with open(full, "wb") as f:
                f.write(data)
            if executable:
                os.chmod(full, os.stat(full).st_mode | (0o100 if umask & 0o011 else 0o111))
            if mtime is not None:
                os.utime(full, (mtime, mtime))
    finally:
        os.umask(old)
    return root


class SameDirectorySameFidTests(SynchronousTestCase):
    def test_order_times_and_umask_do_not_matter(self):
        """Two copies of a directory made in another order, at other times, under another umask, give one fid."""
        one = write_tree(self.mktemp(), sorted(FILES), umask=0o022, mtime=1_000_000)
        two = write_tree(self.mktemp(), sorted(FILES, reverse=True), umask=0o077, mtime=1_900_000_000)
        first, second = p.pack_directory(one, MANIFEST), p.pack_directory(two, MANIFEST)
        self.assertEqual(first, second)
        self.assertEqual(p.fid_of_package(first), p.fid_of_package(second))
        self.assertEqual(len(fid.to_text(p.fid_of_package(first))), 53)

    def test_owners_do_not_matter(self):
        """Files owned by another user pack to the same bytes (uid, gid, uname and gname are zeroed)."""
        if os.geteuid() != 0:
            raise self.skipTest("changing file owners needs root")
        one = write_tree(self.mktemp(), sorted(FILES))
        two = write_tree(self.mktemp(), sorted(FILES))
        for directory, _, names in os.walk(two):
            for name in names:
                os.chown(os.path.join(directory, name), 4321, 4321)
        self.assertEqual(p.pack_directory(one, MANIFEST), p.pack_directory(two, MANIFEST))

    def test_the_execute_bit_is_kept(self):
        """An executable file is 0755 in the package, and making it executable changes the fid."""
        root = write_tree(self.mktemp(), sorted(FILES))
        before = p.pack_directory(root, MANIFEST)
        os.chmod(os.path.join(root, "README"), 0o744)
        after = p.pack_directory(root, MANIFEST)
        self.assertNotEqual(p.fid_of_package(before), p.fid_of_package(after))
        modes = {m.name: m.mode for m in tarfile.open(fileobj=io.BytesIO(after)).getmembers()}
        self.assertEqual((modes["README"], modes["main.py"], modes["lib/util.py"]), (0o755, 0o755, 0o644))

    def test_a_changed_byte_changes_the_fid(self):
        """Editing any file gives another fid."""
        files = [p.PackageFile("main.py", b"print(1)\n")]
        other = [p.PackageFile("main.py", b"print(2)\n")]
        self.assertNotEqual(p.fid_of_package(p.pack(files, MANIFEST)), p.fid_of_package(p.pack(other, MANIFEST)))

    def test_manifest_from_the_directory_is_canonicalised(self):
        """A directory's own orb-manifest.json, however formatted, packs as its canonical JSON."""
        root = write_tree(self.mktemp(), sorted(FILES))
        with open(os.path.join(root, "orb-manifest.json"), "w") as f:
            f.write('{\n  "runtime": "python",\n  "entry": "main.py",\n  "name": "adder"\n}\n')
        self.assertEqual(p.pack_directory(root), p.pack_directory(root, MANIFEST))


class FormatTests(SynchronousTestCase):
    def test_matches_python_tarfile_ustar(self):
        """The packer's bytes equal Python tarfile's USTAR output for the same normalised entries."""
        files = [p.PackageFile(path, data, executable) for path, (data, executable) in FILES.items()]
        ours = p.pack(files, MANIFEST)
        everything = {f.path: (f.data, f.executable) for f in files}
        everything["orb-manifest.json"] = (p.manifest_bytes(MANIFEST), False)
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for path in sorted(everything, key=lambda s: s.encode()):
                data, executable = everything[path]
                info = tarfile.TarInfo(path)
                info.size, info.mode, info.mtime = len(data), 0o755 if executable else 0o644, 0
                info.uname = info.gname = ""
                tar.addfile(info, io.BytesIO(data))
        theirs = out.getvalue()
        self.assertEqual(ours, theirs[: len(ours)])
        self.assertEqual(theirs[len(ours) :], b"\x00" * (len(theirs) - len(ours)))  # tarfile pads to 10240

    def test_layout(self):
        """Sorted entries, 512-byte blocks, data padded, two zero blocks and nothing after."""
        data = p.pack([p.PackageFile("main.py", b"x" * 513)], MANIFEST)
        self.assertEqual(len(data) % 512, 0)
        self.assertEqual(data[-1024:], b"\x00" * 1024)
        self.assertEqual(data[:7], b"main.py")
        self.assertEqual(data[148:156], b"%06o\x00 " % sum(data[:148] + b" " * 8 + data[156:512]))
        self.assertEqual(len(data), 512 + 1024 + 512 + 512 + 1024)

    def test_long_path_split(self):
        """A path over 100 bytes is split at the last '/' that leaves at most 155 bytes of prefix."""
        raw = ("a" * 60 + "/" + "b" * 60 + "/" + "c" * 30 + "/name.txt").encode()
        prefix, name = p.split_path(raw)
        self.assertEqual(prefix, ("a" * 60 + "/" + "b" * 60 + "/" + "c" * 30).encode())
        self.assertEqual(name, b"name.txt")
        self.assertEqual(p.split_path(b"short/path"), (b"", b"short/path"))
        self.assertEqual(p.split_path(b"x" * 100), (b"", b"x" * 100))

    def test_unpackable_paths_are_refused(self):
        """Paths over 255 bytes, without a usable '/', with a long last part, or with '..' are refused."""
        for path in ("x" * 101, "a/" + "b" * 101, "d" * 156 + "/f", "a/" * 120 + "bbbbbbbbbbbbbbbbb",
                     "../escape", "a//b", "/abs", "a/./b", "dir/", "back\\slash"):
            self.assertRaises(p.PackageError, p.pack, [p.PackageFile(path, b"")], MANIFEST)

    def test_manifest_rules(self):
        """The manifest needs name, runtime and an entry in the package, is given once, and holds I-JSON integers only."""
        self.assertRaises(p.PackageError, p.pack, [p.PackageFile("main.py", b"")], {"name": "x", "runtime": "py"})
        self.assertRaises(p.PackageError, p.pack, [p.PackageFile("other.py", b"")], MANIFEST)
        self.assertRaises(p.PackageError, p.pack,
                          [p.PackageFile("main.py", b""), p.PackageFile("orb-manifest.json", b"{}")], MANIFEST)
        self.assertRaises(p.PackageError, p.pack, [p.PackageFile("main.py", b"")], {**MANIFEST, "big": 2**60})
        self.assertRaises(p.PackageError, p.pack, [p.PackageFile("main.py", b"")], {**MANIFEST, "x": [{"y": 1.5}]})

    def test_duplicate_paths_are_refused(self):
        """Two files with one path cannot be packed."""
        files = [p.PackageFile("main.py", b"1"), p.PackageFile("main.py", b"2")]
        self.assertRaises(p.PackageError, p.pack, files, MANIFEST)


class RefusedSourceTests(SynchronousTestCase):
    def test_symlink_is_refused(self):
        """A symbolic link in the directory stops packing rather than being skipped."""
        root = write_tree(self.mktemp(), sorted(FILES))
        os.symlink("main.py", os.path.join(root, "link.py"))
        err = self.assertRaises(p.PackageError, p.pack_directory, root, MANIFEST)
        self.assertIn("link.py", str(err))

    def test_fifo_is_refused(self):
        """A FIFO in the directory stops packing."""
        root = write_tree(self.mktemp(), sorted(FILES))
        os.mkfifo(os.path.join(root, "pipe"))
        self.assertRaises(p.PackageError, p.pack_directory, root, MANIFEST)

    def test_empty_directories_leave_no_trace(self):
        """An empty directory does not change the package."""
        root = write_tree(self.mktemp(), sorted(FILES))
        before = p.pack_directory(root, MANIFEST)
        os.mkdir(os.path.join(root, "empty"))
        self.assertEqual(p.pack_directory(root, MANIFEST), before)


class UnpackTests(SynchronousTestCase):
    def test_round_trip(self):
        """A canonical package unpacks to its files and manifest."""
        files = [p.PackageFile(path, data, executable) for path, (data, executable) in sorted(FILES.items())]
        data = p.pack(files, MANIFEST)
        got_files, manifest = p.unpack(data)
        self.assertEqual(manifest, MANIFEST)
        self.assertEqual(sorted(got_files, key=lambda f: f.path), sorted(files, key=lambda f: f.path))

    def test_non_canonical_archive_is_refused(self):
        """An archive with an mtime, or trailing padding, is not canonical."""
        data = bytearray(p.pack([p.PackageFile("main.py", b"1")], MANIFEST))
        self.assertRaises(p.PackageError, p.unpack, bytes(data) + b"\x00" * 512)
        data[136:147] = b"%011o" % 1_700_000_000
        self.assertRaises(p.PackageError, p.unpack, bytes(data))

    def test_garbage_is_refused(self):
        """Bytes that are not an archive at all give PackageError, not a crash."""
        for junk in (b"", b"x" * 100, b"\xff" * 1024, b"main.py".ljust(1024, b"\x00")):
            self.assertRaises(p.PackageError, p.unpack, junk)


class RfcExampleTests(SynchronousTestCase):
    def test_section_9_2_split_example(self):
        """The split example of RFC 9.2 (a 102-byte path, a 93-byte prefix) is what the packer does."""
        from orb.protocol import spec

        raw = (spec.PACKAGE_LONG_DIR + "/zero.txt").encode()
        prefix, name = p.split_path(raw)
        self.assertEqual((len(raw), len(prefix), name), (102, 93, b"zero.txt"))


class HostileArchiveTests(SynchronousTestCase):
    @settings(max_examples=300, deadline=None, derandomize=True)
    @given(st.data())
    def test_corrupted_packages_raise_only_package_error(self, data):
        """A package with any bytes changed or cut is refused with PackageError, never a crash."""
        files = [p.PackageFile(path, body, executable) for path, (body, executable) in sorted(FILES.items())]
        archive = bytearray(p.pack(files, MANIFEST))
        for _ in range(data.draw(st.integers(1, 6))):
            archive[data.draw(st.integers(0, len(archive) - 1))] = data.draw(st.integers(0, 255))
        cut = data.draw(st.integers(0, len(archive)))
        try:
            p.unpack(bytes(archive[:cut]))
        except p.PackageError:
            pass


class IgnoreTests(SynchronousTestCase):
    def tree(self, paths, orbignore=None):
        root = self.mktemp()
        for path in paths:
            full = os.path.join(root, *path.split("/"))
            os.makedirs(os.path.dirname(full), exist_ok=True)
            with open(full, "wb") as f:
                f.write(path.encode())
        if orbignore is not None:
            with open(os.path.join(root, ".orbignore"), "w") as f:
                f.write(orbignore)
        return root

    def packed_paths(self, root):
        files, _ = p.read_directory(root)
        return sorted(f.path for f in files)

    def test_default_ignore_list(self):
        """VCS dirs, __pycache__, .pyc, editor and OS files, orb.toml and .orbignore stay out by default."""
        root = self.tree(["main.py", ".git/HEAD", ".hg/store", "__pycache__/main.cpython-311.pyc", "lib/x.pyc",
                          "lib/__pycache__/y.pyc", "main.py~", ".main.py.swp", ".DS_Store", ".idea/ws.xml",
                          ".vscode/settings.json", "orb.toml", "sub/orb.toml", "lib/keep.py", "old.orb"],
                         orbignore="")
        self.assertEqual(self.packed_paths(root), ["lib/keep.py", "main.py", "sub/orb.toml"])

    def test_orbignore_patterns(self):
        """.orbignore takes globs, anchored paths, directory-only patterns, ** and ! re-inclusion."""
        root = self.tree(["main.py", "a.log", "deep/b.log", "important.log", "build/out.bin", "src/build",
                          "docs/x/y.md", "tests/test_a.py", "data/big.csv", "data/small.csv"],
                         orbignore="# comment\n\n*.log\n!important.log\nbuild/\n/tests\ndocs/**/*.md\ndata/b*.csv\n")
        self.assertEqual(self.packed_paths(root), ["data/small.csv", "important.log", "main.py", "src/build"])

    def test_ignored_directory_is_not_entered(self):
        """A file under an ignored directory cannot be taken back in, and a symlink there is not refused."""
        root = self.tree(["main.py", "node_modules/keep.js"], orbignore="node_modules/\n!node_modules/keep.js\n")
        os.symlink("/etc/passwd", os.path.join(root, "node_modules", "link"))
        self.assertEqual(self.packed_paths(root), ["main.py"])

    def test_ignore_changes_the_fid_only_through_what_goes_in(self):
        """Adding an ignored file leaves the fid as it was."""
        root = self.tree(["main.py"], orbignore="*.tmp\n")
        before = p.pack_directory(root, MANIFEST)
        with open(os.path.join(root, "scratch.tmp"), "w") as f:
            f.write("x")
        with open(os.path.join(root, ".main.py.swp"), "w") as f:
            f.write("x")
        self.assertEqual(p.pack_directory(root, MANIFEST), before)

    def test_ignored_symlink_is_fine(self):
        """A symbolic link that .orbignore leaves out does not stop packing."""
        root = self.tree(["main.py"], orbignore="venv\n")
        os.symlink("/usr", os.path.join(root, "venv"))
        self.assertEqual(self.packed_paths(root), ["main.py"])


class RefusalMessageTests(SynchronousTestCase):
    def refusal(self, make):
        root = write_tree(self.mktemp(), sorted(FILES))
        make(root)
        return str(self.assertRaises(p.PackageError, p.pack_directory, root, MANIFEST))

    def test_symlink_message(self):
        """A symlink is named, called a symbolic link, and the fix is given."""
        msg = self.refusal(lambda root: os.symlink("README", os.path.join(root, "lib", "readme-link")))
        self.assertIn("'lib/readme-link' is a symbolic link", msg)
        self.assertIn("replace it with a copy", msg)
        self.assertIn(".orbignore", msg)

    def test_symlinked_directory_is_refused(self):
        """A symbolic link to a directory is refused too, not followed."""
        msg = self.refusal(lambda root: os.symlink("lib", os.path.join(root, "lib2")))
        self.assertIn("'lib2' is a symbolic link", msg)

    def test_fifo_message(self):
        """A FIFO is named as a FIFO."""
        msg = self.refusal(lambda root: os.mkfifo(os.path.join(root, "pipe")))
        self.assertIn("'pipe' is a FIFO", msg)

    def test_socket_message(self):
        """A unix socket is named as a socket."""
        import socket

        def make(root):
            s = socket.socket(socket.AF_UNIX)
            self.addCleanup(s.close)
            s.bind(os.path.join(root, "sock"))

        self.assertIn("'sock' is a socket", self.refusal(make))

    def test_device_message(self):
        """A device node is named as a device."""
        if os.geteuid() != 0:
            raise self.skipTest("making a device node needs root")
        msg = self.refusal(lambda root: os.mknod(os.path.join(root, "null"), 0o600 | stat.S_IFCHR, os.makedev(1, 3)))
        self.assertIn("'null' is a character device", msg)

    def test_dotdot_path_is_refused(self):
        """A path with a '..' component is refused with the reason."""
        err = self.assertRaises(p.PackageError, p.pack, [p.PackageFile("lib/../../etc/passwd", b"")], MANIFEST)
        self.assertIn("'..'", str(err))

    def test_archive_with_symlink_or_device_entry_is_refused(self):
        """unpack names a symbolic-link, hard-link, device or FIFO entry in a received archive."""
        data = bytearray(p.pack([p.PackageFile("main.py", b"1")], MANIFEST))
        for flag, word in ((b"2", "symbolic-link"), (b"1", "hard-link"), (b"3", "character-device"),
                           (b"6", "FIFO")):
            data[156:157] = flag
            err = self.assertRaises(p.PackageError, p.unpack, bytes(data))
            self.assertIn(f"'main.py' is a {word} entry", str(err))

    def test_archive_with_dotdot_path_is_refused(self):
        """unpack refuses a received archive entry whose path climbs out with '..'."""
        data = bytearray(p.pack([p.PackageFile("main.py", b"1"), p.PackageFile("a/x", b"")], MANIFEST))
        data[0:100] = b"../x".ljust(100, b"\x00")
        err = self.assertRaises(p.PackageError, p.unpack, bytes(data))
        self.assertIn("'..'", str(err))


class SizeCapTests(SynchronousTestCase):
    def test_default_cap(self):
        """The default cap is 64 MiB."""
        self.assertEqual(p.MAX_PACKAGE_BYTES, 64 * 1024 * 1024)

    def test_package_size_is_exact(self):
        """package_size predicts the archive's length from the data sizes alone."""
        files = [p.PackageFile(path, data, executable) for path, (data, executable) in FILES.items()]
        data = p.pack(files, MANIFEST)
        self.assertEqual(p.package_size([len(f.data) for f in files] + [len(p.manifest_bytes(MANIFEST))]), len(data))

    def test_directory_over_the_cap_is_refused_before_reading(self):
        """A directory whose package would pass the cap is refused, naming the largest files."""
        root = write_tree(self.mktemp(), sorted(FILES))
        with open(os.path.join(root, "big.bin"), "wb") as f:
            f.truncate(10_000)
        err = self.assertRaises(p.PackageTooLarge, p.pack_directory, root, MANIFEST, max_package_bytes=8192)
        self.assertIn("8192-byte cap", str(err))
        self.assertIn("big.bin (10000 bytes)", str(err))
        self.assertTrue(p.pack_directory(root, MANIFEST, max_package_bytes=20_000))

    def test_pack_refuses_over_the_cap(self):
        """pack with a cap refuses a package one byte too big and accepts one that fits exactly."""
        files = [p.PackageFile("main.py", b"x" * 100)]
        size = len(p.pack(files, MANIFEST))
        self.assertEqual(len(p.pack(files, MANIFEST, max_package_bytes=size)), size)
        self.assertRaises(p.PackageTooLarge, p.pack, files, MANIFEST, max_package_bytes=size - 1)


class AnyMachineTests(SynchronousTestCase):
    def test_listing_order_does_not_matter(self):
        """The packer sorts by path, so the order the file system lists entries in changes nothing."""
        from unittest import mock

        root = write_tree(self.mktemp(), sorted(FILES))
        expected = p.pack_directory(root, MANIFEST)
        real = os.listdir
        with mock.patch.object(p.os, "listdir", lambda path: list(reversed(sorted(real(path))))):
            self.assertEqual(p.pack_directory(root, MANIFEST), expected)

    def test_directory_gives_the_rfc_vector(self):
        """Appendix C's files written to a directory (any umask, any times) pack to the RFC's fid."""
        import json

        from orb.protocol import spec

        with open(spec.VECTORS_PATH) as f:
            vector = json.load(f)["package"]
        for umask, mtime in ((0o022, 0), (0o077, 2_000_000_000)):
            root = self.mktemp()
            old = os.umask(umask)
            try:
                for e in vector["entries"]:
                    if e["path"] == p.MANIFEST_NAME:
                        continue
                    full = os.path.join(root, *e["path"].split("/"))
                    os.makedirs(os.path.dirname(full), exist_ok=True)
                    with open(full, "wb") as f:
                        f.write(bytes.fromhex(e["data"]))
                    if e["mode"] == "0755":
                        os.chmod(full, 0o700)
                    os.utime(full, (mtime, mtime))
            finally:
                os.umask(old)
            data = p.pack_directory(root, vector["manifest"])
            self.assertEqual(fid.to_text(p.fid_of_package(data)), vector["fid"])


def _trees():
    component = st.text(alphabet="abcxyz019_-", min_size=1, max_size=6)
    entry = st.tuples(st.lists(component, min_size=1, max_size=3).map("/".join), st.binary(max_size=600),
                      st.booleans())
    return st.lists(entry, min_size=1, max_size=8, unique_by=lambda e: e[0]).filter(
        lambda entries: not any(a[0].startswith(b[0] + "/") for a in entries for b in entries))


class DeterminismPropertyTests(SynchronousTestCase):
    @settings(max_examples=40, deadline=None, derandomize=True)
    @given(_trees(), st.randoms(use_true_random=False))
    def test_any_tree_any_order_any_umask(self, entries, rnd):
        """Any tree of files, written in two random orders with other umasks and times, packs to one fid."""
        fids = []
        for umask, mtime in ((0o022, 1), (0o077, 1_999_999_999)):
            root = self.mktemp()
            os.makedirs(root)
            order = list(entries)
            rnd.shuffle(order)
            old = os.umask(umask)
            try:
                for path, data, executable in order:
                    full = os.path.join(root, *path.split("/"))
                    os.makedirs(os.path.dirname(full), exist_ok=True)
                    with open(full, "wb") as f:
                        f.write(data)
                    if executable:
                        os.chmod(full, 0o700)
                    os.utime(full, (mtime, mtime))
            finally:
                os.umask(old)
            manifest = {**MANIFEST, "entry": entries[0][0]}
            fids.append(p.fid_of_package(p.pack_directory(root, manifest)))
        self.assertEqual(fids[0], fids[1])
