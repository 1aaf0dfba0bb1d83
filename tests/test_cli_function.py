"""
The function verbs of the ``orb`` command as a user runs them: keygen, init,
hash, build, run and verify, their --json output, their error messages and
their documented exit statuses; the --tracker resolution and the progress bar.
"""

import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
from unittest import mock

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from orb.cli import _config, _keys, _ui
from orb.cli.main import main
from orb.protocol import fid as fidmod
from orb.protocol import manifest as mf
from orb.protocol import package as pkg

from .hostile._support import missing_layers_reason

ORB_SCRIPT = os.path.join(os.path.dirname(sys.executable), "orb")


def orb_process(*args, cwd=None, env=None, stdin=b""):
    """The installed ``orb`` console script in a child process (run starts a reactor)."""
    cmd = [ORB_SCRIPT] if os.path.exists(ORB_SCRIPT) else [
        sys.executable, "-c", "import sys; from orb.cli.main import main; sys.exit(main())"]
    p = subprocess.run([*cmd, *args], input=stdin, capture_output=True, timeout=120, cwd=cwd,
                       env={**os.environ, **(env or {})})
    return p.returncode, p.stdout.decode(), p.stderr.decode()


class CliCase(SynchronousTestCase):
    def setUp(self):
        self.home = os.path.abspath(self.mktemp())
        patcher = mock.patch.dict(os.environ, {"ORB_HOME": self.home})
        patcher.start()
        self.addCleanup(patcher.stop)

    def orb(self, *argv):
        """Call main() in this process with stdout and stderr captured."""
        out, err = io.StringIO(), io.StringIO()
        with mock.patch("sys.stdout", out), mock.patch("sys.stderr", err):
            code = main(list(argv))
        return code, out.getvalue(), err.getvalue()

    def orb_json(self, *argv):
        code, out, err = self.orb(*argv, "--json")
        return code, json.loads(out), err

    def new_function(self, template="python", name="adder"):
        path = os.path.abspath(self.mktemp())
        code, _, err = self.orb("init", path, "--template", template, "--name", name)
        self.assertEqual(code, 0, err)
        return path


class HelpTests(CliCase):
    def test_help_lists_verbs_and_exit_codes(self):
        """orb --help names every verb and documents every exit status."""
        code, out, _ = self.orb("--help")
        self.assertEqual(code, 0)
        for verb in ("keygen", "init", "hash", "build", "run", "verify", "deploy", "ls", "info", "sandbox-run",
                     "sandbox-check"):
            self.assertIn(verb, out)
        for status in ("0 ", "1 ", "2 ", "3 ", "4 ", "5 ", "6 ", "7 ", "8 ", "9 ", "10 ", "130"):
            self.assertIn("\n  " + status, out)

    def test_build_help_states_the_size_cap(self):
        """orb build --help says the default package size cap."""
        _, out, _ = self.orb("build", "--help")
        self.assertIn("64 MiB", out)

    def test_every_verb_takes_json(self):
        """Every verb, the sandbox ones included, accepts --json."""
        for verb in ("keygen", "init", "hash", "build", "run", "verify", "deploy", "ls", "info", "sandbox-run",
                     "sandbox-check"):
            _, out, _ = self.orb(verb, "--help")
            self.assertIn("--json", out, verb)

    def test_usage_error_with_json(self):
        """A bad argument exits 2 with one stderr line, and with --json a JSON error on stdout."""
        code, out, err = self.orb("build", "--json", "--frobnicate")
        self.assertEqual(code, 2)
        self.assertEqual(err.count("\n"), 1)
        self.assertEqual(json.loads(out)["error"]["kind"], "usage")


class KeygenTests(CliCase):
    def test_writes_a_0600_key_in_orb_home(self):
        """keygen writes owner.key with mode 0600 in a 0700 ORB_HOME, even under umask 000."""
        old = os.umask(0)
        try:
            code, doc, _ = self.orb_json("keygen")
        finally:
            os.umask(old)
        self.assertEqual(code, 0)
        path = os.path.join(self.home, "owner.key")
        self.assertEqual(doc["key_path"], path)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(self.home).st_mode), 0o700)
        self.assertEqual(_keys.load_owner_key(path).public_bytes.hex(), doc["owner_key"])

    def test_refuses_to_overwrite(self):
        """A second keygen exits 4, says why, and leaves the key as it was."""
        self.orb("keygen")
        path = os.path.join(self.home, "owner.key")
        with open(path, "rb") as f:
            before = f.read()
        code, out, err = self.orb("keygen")
        self.assertEqual(code, _ui.EXIT_EXISTS)
        self.assertIn("never overwrites", err)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), before)

    def test_key_flag_and_secret_not_printed(self):
        """--key picks the path, and neither output shows the private key."""
        path = os.path.join(os.path.abspath(self.mktemp()), "k", "owner.pem")
        code, out, err = self.orb("keygen", "--key", path)
        self.assertEqual(code, 0)
        with open(path) as f:
            pem = f.read()
        body = "".join(pem.splitlines()[1:-1])
        self.assertNotIn(body, out + err)
        self.assertNotIn("PRIVATE", out + err)

    def test_loading_refuses_a_readable_key(self):
        """A key file others can read is refused with the chmod that fixes it."""
        path = os.path.join(self.home, "owner.key")
        self.orb("keygen")
        os.chmod(path, 0o644)
        err = self.assertRaises(_keys.OwnerKeyError, _keys.load_owner_key, path)
        self.assertIn("chmod 600", str(err))

    def test_loading_refuses_a_missing_or_bad_key(self):
        """A missing key points to orb keygen; a file that is not a PEM key says so."""
        path = os.path.join(self.home, "owner.key")
        self.assertIn("orb keygen", str(self.assertRaises(_keys.OwnerKeyError, _keys.load_owner_key, path)))
        os.makedirs(self.home)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, b"not a key")
        os.close(fd)
        self.assertIn("not an unencrypted PEM", str(self.assertRaises(_keys.OwnerKeyError, _keys.load_owner_key,
                                                                      path)))


class InitTests(CliCase):
    def test_python_template(self):
        """init writes orb.toml, main.py and .orbignore, and the result validates and builds."""
        path = os.path.abspath(self.mktemp())
        code, doc, _ = self.orb_json("init", path)
        self.assertEqual(code, 0)
        self.assertEqual(sorted(os.listdir(path)), [".orbignore", "main.py", "orb.toml"])
        with open(os.path.join(path, "orb.toml"), "rb") as f:
            m = mf.from_toml(f.read())
        self.assertEqual((m.runtime, m.entry, len(m.samples)), ("python", "main.py", 1))
        self.assertEqual(doc["fid"], self.orb("hash", path)[1].strip())

    def test_exec_template(self):
        """init --template exec writes an executable main and an exec manifest."""
        path = self.new_function("exec", "greet")
        self.assertTrue(os.access(os.path.join(path, "main"), os.X_OK))
        with open(os.path.join(path, "orb.toml"), "rb") as f:
            self.assertEqual(mf.from_toml(f.read()).runtime, "exec")

    def test_name_from_directory(self):
        """Without --name the function is named after its directory, made a DNS label."""
        path = os.path.join(os.path.abspath(self.mktemp()), "My_Cool Function")
        code, doc, _ = self.orb_json("init", path)
        self.assertEqual((code, doc["name"]), (0, "my-cool-function"))

    def test_refuses_a_non_empty_directory(self):
        """init into a directory that has files exits 4 and touches nothing."""
        path = self.new_function()
        code, _, err = self.orb("init", path)
        self.assertEqual(code, _ui.EXIT_EXISTS)
        self.assertIn("not an empty directory", err)

    def test_bad_name_and_template(self):
        """A name that is not a DNS label, or an unknown template, is a usage error (exit 2)."""
        code, _, err = self.orb("init", self.mktemp(), "--name", "Bad_Name")
        self.assertEqual(code, 2)
        self.assertIn("--name 'Bad_Name'", err)
        code, _, err = self.orb("init", self.mktemp(), "--template", "ruby")
        self.assertEqual(code, 2)
        self.assertIn("invalid choice", err)


class HashBuildVerifyTests(CliCase):
    def test_hash_json(self):
        """hash --json gives the fid, its DNS name and the package size."""
        path = self.new_function()
        code, doc, _ = self.orb_json("hash", path)
        self.assertEqual(code, 0)
        self.assertEqual(doc["dns_name"], doc["fid"] + ".orb")
        self.assertEqual(len(doc["fid"]), 53)
        fidmod.from_text(doc["fid"])

    def test_same_function_same_fid_anywhere(self):
        """Two copies of a function, made at other times, in other places, with droppings, hash alike."""
        one = self.new_function()
        two = os.path.abspath(self.mktemp())
        shutil.copytree(one, two)
        os.utime(os.path.join(two, "main.py"), (1, 1))
        os.makedirs(os.path.join(two, "__pycache__"))
        with open(os.path.join(two, "main.py~"), "w") as f:
            f.write("old")
        self.assertEqual(self.orb("hash", one)[1], self.orb("hash", two)[1])

    def test_build_writes_the_package(self):
        """build -o writes the canonical package: its manifest is the orb.toml's, and it hashes to hash's fid."""
        path = self.new_function()
        out = os.path.join(os.path.abspath(self.mktemp()) + ".orb")
        code, doc, _ = self.orb_json("build", path, "-o", out)
        self.assertEqual(code, 0)
        with open(out, "rb") as f:
            data = f.read()
        self.assertEqual(fidmod.to_text(pkg.fid_of_package(data)), doc["fid"])
        files, manifest = pkg.unpack(data)
        self.assertEqual(sorted(f.path for f in files), ["main.py"])
        self.assertEqual(manifest["name"], "adder")
        self.assertEqual(doc["fid"], self.orb("hash", path)[1].strip())

    def test_build_default_output_name(self):
        """Without -o, build writes NAME-VERSION.orb in the current directory."""
        path = self.new_function()
        here = os.path.abspath(self.mktemp())
        os.makedirs(here)
        code, out, err = orb_process("build", path, cwd=here, env={"ORB_HOME": self.home})
        self.assertEqual(code, 0, err)
        self.assertTrue(os.path.isfile(os.path.join(here, "adder-0.1.0.orb")))

    def test_no_source_ships_bytecode_only(self):
        """build --no-source ships .pyc files and a loader, no author source, and records the bytecode tag."""
        path = self.new_function()
        os.makedirs(os.path.join(path, "lib"))
        with open(os.path.join(path, "lib", "util.py"), "w") as f:
            f.write("SECRET_SOURCE_LINE = 1\n")
        out = os.path.abspath(self.mktemp())
        code, doc, _ = self.orb_json("build", path, "--no-source", "-o", out)
        self.assertEqual(code, 0)
        files, manifest = pkg.unpack(open(out, "rb").read())
        paths = sorted(f.path for f in files)
        self.assertEqual(paths, ["lib/util.pyc", "main.py", "main.pyc"])
        self.assertEqual(manifest["bytecode"], sys.implementation.cache_tag)
        loader = next(f for f in files if f.path == "main.py").data
        self.assertIn(b"orb build --no-source", loader)
        self.assertNotIn(b"json.loads", loader)
        self.assertNotEqual(doc["fid"], self.orb("hash", path)[1].strip())

    def test_no_source_is_deterministic_across_processes(self):
        """Two processes building --no-source from copies of one directory get one fid."""
        one = self.new_function()
        two = os.path.abspath(self.mktemp())
        shutil.copytree(one, two)
        a = orb_process("hash", one, "--no-source")
        b = orb_process("hash", two, "--no-source", env={"PYTHONHASHSEED": "12345"})
        self.assertEqual((a[0], b[0]), (0, 0))
        self.assertEqual(a[1], b[1])

    def test_no_source_refuses_exec_and_bad_syntax(self):
        """--no-source on an exec function, or on a source with a syntax error, exits 3 saying why."""
        code, _, err = self.orb("build", self.new_function("exec", "greet"), "--no-source")
        self.assertEqual(code, 3)
        self.assertIn("compiles python functions", err)
        path = self.new_function()
        with open(os.path.join(path, "main.py"), "w") as f:
            f.write("def handler(event, context) return 1\n")
        code, _, err = self.orb("build", path, "--no-source")
        self.assertEqual(code, 3)
        self.assertIn("main.py, line 1", err)

    def test_verify_file_and_directory(self):
        """verify exits 0 when a package file or a directory hashes to the fid, 1 when not."""
        path = self.new_function()
        out = os.path.abspath(self.mktemp())
        fid_text = self.orb_json("build", path, "-o", out)[1]["fid"]
        code, doc, _ = self.orb_json("verify", fid_text, out)
        self.assertEqual((code, doc["match"], doc["canonical"], doc["source"]), (0, True, True, "file"))
        self.assertEqual(self.orb("verify", fid_text, path)[0], 0)
        with open(out, "ab") as f:
            f.write(b"\x00" * 512)
        code, doc, _ = self.orb_json("verify", fid_text, out)
        self.assertEqual((code, doc["match"], doc["canonical"]), (1, False, False))
        code, out_text, _ = self.orb("verify", fid_text, out)
        self.assertIn("MISMATCH", out_text)

    def test_verify_bad_fid_and_path(self):
        """A malformed FID is a usage error (2); a missing path is bad input (3)."""
        path = self.new_function()
        code, _, err = self.orb("verify", "not-a-fid", path)
        self.assertEqual(code, 2)
        self.assertIn("is not a fid", err)
        fid_text = self.orb("hash", path)[1].strip()
        code, _, err = self.orb("verify", fid_text, "/no/such/thing")
        self.assertEqual(code, 3)
        self.assertIn("neither a package file nor a function directory", err)


class BadInputTests(CliCase):
    def test_missing_orb_toml(self):
        """A directory without orb.toml exits 3, pointing at orb init."""
        empty = os.path.abspath(self.mktemp())
        os.makedirs(empty)
        code, _, err = self.orb("hash", empty)
        self.assertEqual(code, 3)
        self.assertIn("orb.toml does not exist", err)
        self.assertIn("orb init", err)

    def test_bad_manifest_json_error(self):
        """A bad orb.toml exits 3; --json gives each problem's field, value and fix."""
        path = self.new_function()
        with open(os.path.join(path, "orb.toml")) as f:
            text = f.read()
        with open(os.path.join(path, "orb.toml"), "w") as f:
            f.write("replicas = 0\n" + text.replace("replicas = 3 ", "# "))
        code, doc, err = self.orb_json("build", path)
        self.assertEqual(code, 3)
        self.assertEqual(doc["error"]["kind"], "manifest")
        self.assertIn("replicas = 0: give a whole number of copies from 1 to 32", doc["error"]["message"])
        self.assertIn("replicas = 0", err)

    def test_symlink_in_directory(self):
        """A symlink in the function directory exits 3 naming it."""
        path = self.new_function()
        os.symlink("main.py", os.path.join(path, "alias.py"))
        code, _, err = self.orb("hash", path)
        self.assertEqual(code, 3)
        self.assertIn("'alias.py' is a symbolic link", err)

    def test_missing_entry_and_non_executable_exec(self):
        """An entry that is not there, or an exec entry without the execute bit, exits 3 with the fix."""
        path = self.new_function()
        os.unlink(os.path.join(path, "main.py"))
        code, _, err = self.orb("hash", path)
        self.assertEqual(code, 3)
        self.assertIn("entry = 'main.py': no such file", err)
        path = self.new_function("exec", "greet")
        os.chmod(os.path.join(path, "main"), 0o644)
        code, _, err = self.orb("hash", path)
        self.assertEqual(code, 3)
        self.assertIn("chmod +x", err)

    def test_stray_manifest_json(self):
        """An orb-manifest.json in the directory is refused: the manifest comes from orb.toml."""
        path = self.new_function()
        with open(os.path.join(path, "orb-manifest.json"), "w") as f:
            f.write("{}")
        code, _, err = self.orb("hash", path)
        self.assertEqual(code, 3)
        self.assertIn("made from orb.toml", err)

    def test_too_large(self):
        """A directory over the size cap exits 3 with kind too_large."""
        path = self.new_function()
        with open(os.path.join(path, "big.bin"), "wb") as f:
            f.truncate(pkg.MAX_PACKAGE_BYTES)
        code, doc, _ = self.orb_json("hash", path)
        self.assertEqual((code, doc["error"]["kind"]), (3, "too_large"))
        self.assertIn("big.bin", doc["error"]["message"])


class RunTests(CliCase):
    """orb run in the production jail (real jailed children, as the brief asks of `orb init` + `orb run`)."""

    def setUp(self):
        super().setUp()
        reason = missing_layers_reason()
        if reason:
            raise SkipTest(reason)

    def test_init_then_samples_pass(self):
        """`orb init` then `orb run --samples` passes in the real jail, for both templates."""
        for template, name in (("python", "adder"), ("exec", "greet")):
            path = self.new_function(template, name)
            code, out, err = orb_process("run", path, "--samples", "--json")
            self.assertEqual(code, 0, err + out)
            doc = json.loads(out)
            self.assertEqual((doc["passed"], doc["failed"]), (1, 0))

    def test_failing_sample(self):
        """A sample whose output differs fails: exit 1, FAIL and what was expected against what came."""
        path = self.new_function()
        with open(os.path.join(path, "orb.toml")) as f:
            text = f.read()
        with open(os.path.join(path, "orb.toml"), "w") as f:
            f.write(text.replace("sum = 5", "sum = 6"))
        code, out, err = orb_process("run", path, "--samples")
        self.assertEqual(code, 1, err)
        self.assertIn("FAIL two plus three", out)
        self.assertIn('expected JSON equal to {"sum":6}, got {"sum":5}', out)

    def test_crashing_function_shows_its_log(self):
        """A function that raises fails its sample with status ERROR and its traceback in the log."""
        path = self.new_function()
        with open(os.path.join(path, "main.py"), "w") as f:
            f.write("def handler(event, context):\n    raise ValueError('boom')\n")
        code, out, _ = orb_process("run", path, "--samples", "--json")
        self.assertEqual(code, 1)
        (row,) = json.loads(out)["samples"]
        self.assertEqual(row["status"], "ERROR")
        self.assertIn("ValueError: boom", row["log"])

    def test_data_and_stdin(self):
        """run --data prints the raw output; run with stdin reads the input from it."""
        path = self.new_function()
        code, out, err = orb_process("run", path, "--data", '{"a": 40, "b": 2}')
        self.assertEqual((code, out), (0, '{"sum": 42}'), err)
        code, out, err = orb_process("run", path, "--json", stdin=b'{"a": 1, "b": 1}')
        self.assertEqual(code, 0, err)
        self.assertEqual(json.loads(out)["output"], '{"sum": 2}')

    def test_no_source_package_runs(self):
        """The --no-source package (bytecode and loader, a helper module as .pyc) passes its samples in the jail."""
        path = self.new_function()
        os.makedirs(os.path.join(path, "lib"))
        with open(os.path.join(path, "lib", "maths.py"), "w") as f:
            f.write("def add(a, b):\n    return a + b\n")
        with open(os.path.join(path, "main.py"), "w") as f:
            f.write("import json\nfrom lib.maths import add\n\n\ndef handler(event, context):\n"
                    "    args = json.loads(event)\n    return {'sum': add(args['a'], args['b'])}\n")
        code, out, err = orb_process("run", path, "--samples", "--no-source", "--json")
        self.assertEqual(code, 0, err + out)

    def test_samples_and_data_together_is_a_usage_error(self):
        """--samples with --data is refused with exit 2."""
        code, _, err = self.orb("run", self.new_function(), "--samples", "--data", "x")
        self.assertEqual(code, 2)
        self.assertIn("not allowed with", err)


class TrackerResolutionTests(SynchronousTestCase):
    def config(self, text):
        path = os.path.join(os.path.abspath(self.mktemp()), "config.toml")
        os.makedirs(os.path.dirname(path))
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_flag_then_env_then_config(self):
        """--tracker beats ORB_TRACKER, which beats config.toml."""
        path = self.config('tracker = "10.0.0.3:7400"\n')
        env = {"ORB_TRACKER": "10.0.0.2:7400"}
        self.assertEqual(str(_config.resolve_tracker("10.0.0.1:7400", env, path)), "10.0.0.1:7400")
        self.assertEqual(_config.resolve_tracker(None, env, path).source, "ORB_TRACKER")
        got = _config.resolve_tracker(None, {}, path)
        self.assertEqual((got.host, got.port, got.source), ("10.0.0.3", 7400, path))

    def test_config_in_orb_home(self):
        """Without a path, config.toml is read from ORB_HOME."""
        path = self.config('tracker = "tracker.example.org:7500"\n')
        got = _config.resolve_tracker(None, {"ORB_HOME": os.path.dirname(path)})
        self.assertEqual((got.host, got.port), ("tracker.example.org", 7500))

    def test_forms(self):
        """IPv6 in brackets, host names and a pinned node id are understood."""
        got = _config.parse_tracker("[::1]:7400", "--tracker")
        self.assertEqual((got.host, str(got)), ("::1", "[::1]:7400"))
        node = "ab" * 32
        self.assertEqual(_config.parse_tracker(f"{node}@127.0.0.1:1", "x").node_id, bytes.fromhex(node))

    def test_errors_name_the_source(self):
        """A malformed value, or none at all, says where it came from and what to write."""
        for text, needle in (("127.0.0.1", "is not HOST:PORT"), ("127.0.0.1:0", "1..65535"),
                             ("-bad-:1", "neither an IP address nor a host name"), ("zz@127.0.0.1:1", "node id")):
            err = self.assertRaises(_config.ConfigError, _config.resolve_tracker, None, {"ORB_TRACKER": text})
            self.assertIn("ORB_TRACKER", str(err))
            self.assertIn(needle, str(err))
        err = self.assertRaises(_config.ConfigError, _config.resolve_tracker, None, {}, "/nonexistent/config.toml")
        self.assertIn("--tracker HOST:PORT", str(err))
        bad = self.config("tracker = \n")
        self.assertIn("fix the TOML", str(self.assertRaises(_config.ConfigError, _config.resolve_tracker, None, {},
                                                            bad)))


class ProgressTests(SynchronousTestCase):
    def bar(self, enabled=True):
        from rich.console import Console

        self.now = 100.0
        out = io.StringIO()
        console = Console(file=out, force_terminal=True, width=80)
        return _ui.TransferProgress(1000, "uploading", console=console, enabled=enabled,
                                    clock=lambda: self.now), out

    def test_quick_transfer_shows_nothing(self):
        """A transfer that ends within a second prints no bar."""
        bar, out = self.bar()
        with bar:
            self.now += 0.9
            bar.advance(1000)
        self.assertFalse(bar.shown)
        self.assertEqual(out.getvalue(), "")

    def test_slow_transfer_shows_a_bar(self):
        """A transfer still running after a second shows a bar with its description and progress."""
        bar, out = self.bar()
        with bar:
            bar.advance(100)
            self.now += 1.5
            bar.advance(400)
        self.assertTrue(bar.shown)
        self.assertIn("uploading", out.getvalue())

    def test_json_mode_never_shows_a_bar(self):
        """With the bar disabled (--json), a slow transfer prints nothing."""
        bar, out = self.bar(enabled=False)
        with bar:
            self.now += 5
            bar.advance(1000)
        self.assertEqual(out.getvalue(), "")


class TarfileReadsPackagesTests(CliCase):
    def test_package_is_a_plain_ustar(self):
        """A built package opens with standard tar tools, with zero times and owners."""
        path = self.new_function()
        out = os.path.abspath(self.mktemp())
        self.orb("build", path, "-o", out)
        with tarfile.open(out) as tar:
            members = tar.getmembers()
        self.assertEqual([m.name for m in members], ["main.py", "orb-manifest.json"])
        self.assertEqual({(m.mtime, m.uid, m.gid, m.uname) for m in members}, {(0, 0, 0, "")})


class SignBuiltTests(CliCase):
    def test_signed_deploy_verifies(self):
        """A built directory signed with the owner key gives a statement verify_deploy accepts, for its own package only."""
        from orb.cli import _project
        from orb.protocol.deploy import verify_deploy

        self.orb("keygen")
        key = _keys.load_owner_key(os.path.join(self.home, "owner.key"))
        built = _project.build(self.new_function())
        signed = _project.sign_built(built, key, 1_764_000_000)
        self.assertEqual(signed.owner_key, key.public_bytes)
        entry = tarfile.open(fileobj=io.BytesIO(built.data)).extractfile("orb-manifest.json").read()
        self.assertEqual(signed.manifest, entry)
        self.assertTrue(verify_deploy(signed.owner_key, signed.signature, signed.fid, signed.manifest,
                                      signed.package_size, signed.issued_at))
        self.assertFalse(verify_deploy(signed.owner_key, signed.signature, signed.fid, signed.manifest,
                                       signed.package_size + 512, signed.issued_at))


class VerifyLargeFileTests(CliCase):
    def test_file_over_the_cap_is_hashed_not_unpacked(self):
        """verify hashes a file over the package cap in chunks and says it cannot be a package."""
        import hashlib

        path = os.path.abspath(self.mktemp())
        with open(path, "wb") as f:
            f.truncate(pkg.MAX_PACKAGE_BYTES + 1)
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        fid_text = fidmod.to_text(b"\x01" + digest.digest())
        code, doc, _ = self.orb_json("verify", fid_text, path)
        self.assertEqual((code, doc["match"], doc["canonical"]), (0, True, False))
        self.assertIn("package cap", doc["not_canonical_because"])


class InterruptTests(CliCase):
    def test_ctrl_c_stops_the_run_with_130(self):
        """Ctrl-C during `orb run --samples` exits 130 saying so, rather than reporting a pass or a jail failure."""
        import signal
        import time

        reason = missing_layers_reason()
        if reason:
            raise SkipTest(reason)
        path = self.new_function()
        with open(os.path.join(path, "main.py"), "w") as f:
            f.write("import time\n\n\ndef handler(event, context):\n    time.sleep(4)\n    return {'sum': 5}\n")
        cmd = [ORB_SCRIPT] if os.path.exists(ORB_SCRIPT) else [
            sys.executable, "-c", "import sys; from orb.cli.main import main; sys.exit(main())"]
        p = subprocess.Popen([*cmd, "run", path, "--samples"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.addCleanup(lambda: p.poll() is None and p.kill())
        time.sleep(1.5)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
        self.assertEqual(p.returncode, 130, err)
        self.assertIn("interrupted: 0 of 1 runs finished", err.decode())
        self.assertNotIn(b"PASS", out)
