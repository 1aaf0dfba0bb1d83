# -*- test-case-name: tests.test_cli_function -*-
"""
The function verbs of the ``orb`` command, none of which needs the network:

    orb keygen [--key PATH]                          make the owner key (refuses to overwrite one)
    orb init DIR --template python|exec [--name N]   a working example with a sample
    orb hash DIR [--no-source]                       the fid the network will compute
    orb build DIR [--no-source] [-o FILE]            write the canonical package
    orb run DIR [--data TEXT | --data-file F] [--samples]
                                                     run it in the production jail
    orb verify FID DIR-OR-FILE [--no-source]         do these bytes hash to the fid?

Every verb takes ``--json`` (one JSON document on stdout) and ends with an
exit status from :mod:`orb.cli._ui` (listed in ``orb --help``).
"""

import base64
import hashlib
import os
import re
import sys
import tempfile

from orb.protocol import fid as _fid
from orb.protocol import manifest as _manifest
from orb.protocol import package as _package

from . import _config, _keys, _project, _ui
from ._ui import CommandError

MIB = 1024 * 1024


def register(sub) -> None:
    def verb(name, help_text, func, description=None):
        p = sub.add_parser(name, help=help_text, description=description or help_text)
        p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
        p.set_defaults(func=_guarded(func))
        return p

    p = verb("keygen", "make the owner key that signs deploys (refuses to overwrite one)", keygen)
    p.add_argument("--key", metavar="PATH", help="where to write it (default: $ORB_HOME/owner.key, "
                                                 "ORB_HOME defaulting to ~/.orb); mode 0600")

    p = verb("init", "write a working example function into a new directory", init,
             "Write a working example function, with a sample, into DIR (which must not exist or be empty). "
             "It passes `orb run DIR --samples` as it is.")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--template", choices=["python", "exec"], default="python",
                   help="python: handler(event, context) in main.py; exec: a program reading stdin (default python)")
    p.add_argument("--name", help="the function's name (default: from DIR)")

    size_note = (f"A package over {_package.MAX_PACKAGE_BYTES // MIB} MiB (the tracker's default "
                 "--max-package-bytes) is refused.")
    no_source_help = ("ship only bytecode (python): every .py becomes a .pyc for this Python "
                      f"({sys.implementation.cache_tag}), recorded in the manifest so hosts with another "
                      "version decline it")
    p = verb("hash", "print the fid the network will compute for a function directory", hash_,
             "Print the fid (and DNS name) of DIR's canonical package. " + size_note)
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--no-source", action="store_true", help=no_source_help)

    p = verb("build", "write the canonical package of a function directory", build,
             "Write DIR's canonical package (RFC 9.2). " + size_note)
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--no-source", action="store_true", help=no_source_help)
    p.add_argument("-o", "--output", metavar="FILE", help="where to write it (default: NAME-VERSION.orb here)")

    p = verb("run", "run a function locally in the same jail as production", run,
             "Build DIR's package and run it in the production jail (a local emulator): once with the input "
             "from --data, --data-file or stdin, or every [[sample]] with --samples. Without --json the "
             "function's output goes to stdout as it is and its log to stderr.")
    p.add_argument("dir", metavar="DIR")
    given = p.add_mutually_exclusive_group()
    given.add_argument("--data", metavar="TEXT", help="the input, as UTF-8 text")
    given.add_argument("--data-file", metavar="FILE", help="the input, the bytes of FILE ('-' for stdin)")
    given.add_argument("--samples", action="store_true", help="run every [[sample]] and compare the outputs")
    p.add_argument("--no-source", action="store_true", help="run the --no-source package")
    p.add_argument("--allow-unconfined", action="store_true",
                   help="DANGEROUS: run even if jail layers are missing (production hosts refuse)")

    p = verb("verify", "say whether a package file or directory hashes to a fid", verify,
             "Say whether FILE's bytes, or DIR's canonical package, hash to FID. Exit 0 if they do, 1 if not.")
    p.add_argument("fid", metavar="FID")
    p.add_argument("path", metavar="DIR-OR-FILE")
    p.add_argument("--no-source", action="store_true",
                   help="for a directory: build it as `orb build --no-source` does (same Python version only)")


def _guarded(func):
    """Turn the library's errors into CommandErrors with the right exit status."""

    def run(args):
        try:
            return func(args)
        except _manifest.ManifestError as e:
            raise CommandError(f"{e.source} does not validate:\n  " + "\n  ".join(str(p) for p in e.problems),
                               _ui.EXIT_INPUT, "manifest") from None
        except _project.ProjectError as e:
            raise CommandError(str(e), _ui.EXIT_INPUT, "input") from None
        except _package.PackageTooLarge as e:
            raise CommandError(str(e), _ui.EXIT_INPUT, "too_large") from None
        except _package.PackageError as e:
            raise CommandError(str(e), _ui.EXIT_INPUT, "package") from None
        except _keys.KeyExists as e:
            raise CommandError(str(e), _ui.EXIT_EXISTS, "exists") from None
        except _keys.OwnerKeyError as e:
            raise CommandError(str(e), _ui.EXIT_INPUT, "key") from None
        except _config.ConfigError as e:
            raise CommandError(str(e), _ui.EXIT_INPUT, "config") from None

    return run


# --- keygen ----------------------------------------------------------------------------------------


def keygen(args):
    path = os.path.abspath(args.key or _config.default_key_path())
    try:
        key = _keys.create_owner_key(path)
    except OSError as e:
        raise CommandError(f"cannot write {path}: {e.strerror}", _ui.EXIT_INPUT, "io") from None
    doc = {"ok": True, "key_path": path, "owner_key": key.public_bytes.hex()}
    _ui.emit(args, doc, lambda c: (
        c.print(f"[green]wrote[/] {path} (mode 0600): keep it safe, it owns your deployed functions"),
        c.print(f"owner key: [bold]{doc['owner_key']}[/]")))
    return _ui.EXIT_OK


# --- init ------------------------------------------------------------------------------------------

PYTHON_TOML = '''\
# The manifest of an ORB function. Field by field: README, "Functions".
name = "{name}"
version = "0.1.0"
runtime = "python"                 # python: handler(event, context) | exec: a program
entry = "main.py"
description = "Adds two numbers."
timeout_ms = 5000                  # wall clock per call
memory_mb = 256                    # address space per call
isolation = "per-call"             # per-call: a fresh process | per-function: a warm worker
replicas = 3                       # copies the network keeps
idempotent = true                  # calling twice is as calling once
pure = true                        # same input, same output, no side effects
visibility = "public"

# Samples are run by `orb run --samples`, `orb deploy` and the tracker.
# input = "text" | input_json = <value> | input_base64 = "..."
# output = "text" (exact bytes) | output_json = <value> (equal as JSON) | output_base64 = "..."
[[sample]]
name = "two plus three"
input_json = {{ a = 2, b = 3 }}
output_json = {{ sum = 5 }}
'''

PYTHON_MAIN = '''\
"""An ORB function: handler(event, context) gets the input bytes and returns
the output (bytes and str as they are, anything else as JSON)."""

import json


def handler(event, context):
    args = json.loads(event or b"{}")
    return {"sum": args["a"] + args["b"]}
'''

EXEC_TOML = '''\
# The manifest of an ORB function. Field by field: README, "Functions".
name = "{name}"
version = "0.1.0"
runtime = "exec"                   # exec: a program reading stdin, writing stdout
entry = "main"                     # an executable: an ELF binary or a #! script (sh, bash, perl, python3)
description = "Greets whoever it is given."
timeout_ms = 5000
memory_mb = 256
isolation = "per-call"             # exec functions run a fresh process per call
replicas = 3
idempotent = true
pure = true
visibility = "public"

# Samples are run by `orb run --samples`, `orb deploy` and the tracker.
# input = "text" | input_json = <value> | input_base64 = "..."
# output = "text" (exact bytes) | output_json = <value> (equal as JSON) | output_base64 = "..."
[[sample]]
name = "greets ORB"
input = "ORB"
output = "hello, ORB\\n"
'''

EXEC_MAIN = '''\
#!/bin/sh
# An ORB function (runtime exec): its input on stdin, its output on stdout.
read -r who || true
printf 'hello, %s\\n' "${who:-world}"
'''

IGNORE_TEMPLATE = '''\
# Paths left out of the package, gitignore style (VCS dirs, __pycache__ and
# editor files are left out anyway).
*.log
'''


def _name_from(directory):
    name = re.sub(r"[^a-z0-9-]+", "-", os.path.basename(os.path.abspath(directory)).lower()).strip("-")[:63]
    return name.strip("-") or "my-function"


def init(args):
    directory = os.path.abspath(args.dir)
    name = args.name or _name_from(directory)
    if not _manifest.LABEL_RE.match(name):
        raise CommandError(f"--name {name!r}: use 1 to 63 lowercase letters, digits and hyphens, not starting or "
                           "ending with a hyphen", _ui.EXIT_USAGE, "usage")
    if os.path.lexists(directory) and (not os.path.isdir(directory) or os.listdir(directory)):
        raise CommandError(f"{directory} exists and is not an empty directory: orb init writes only into a new "
                           "or empty directory", _ui.EXIT_EXISTS, "exists")
    if args.template == "python":
        files = {"orb.toml": (PYTHON_TOML.format(name=name), 0o644), "main.py": (PYTHON_MAIN, 0o644)}
    else:
        files = {"orb.toml": (EXEC_TOML.format(name=name), 0o644), "main": (EXEC_MAIN, 0o755)}
    files[".orbignore"] = (IGNORE_TEMPLATE, 0o644)
    try:
        os.makedirs(directory, exist_ok=True)
        for rel, (text, mode) in files.items():
            path = os.path.join(directory, rel)
            with open(path, "x", encoding="utf-8") as f:
                f.write(text)
            os.chmod(path, mode)
    except OSError as e:
        raise CommandError(f"cannot write {e.filename}: {e.strerror}", _ui.EXIT_INPUT, "io") from None
    built = _project.build(directory)
    doc = {"ok": True, "dir": directory, "name": name, "template": args.template, "files": sorted(files),
           "fid": _fid.to_text(built.fid)}
    _ui.emit(args, doc, lambda c: (
        c.print(f"[green]created[/] {directory}: {', '.join(sorted(files))}"),
        c.print(f"try it:  orb run {args.dir} --samples")))
    return _ui.EXIT_OK


# --- hash, build, verify ---------------------------------------------------------------------------


def _describe(built):
    text = _fid.to_text(built.fid)
    doc = {"ok": True, "fid": text, "dns_name": f"{text}.orb", "package_bytes": len(built.data),
           "name": built.manifest.name, "version": built.manifest.version, "runtime": built.manifest.runtime,
           "files": [f.path for f in built.files]}
    if built.manifest.bytecode:
        doc["bytecode"] = built.manifest.bytecode
    return doc


def hash_(args):
    built = _project.build(args.dir, no_source=args.no_source)
    doc = _describe(built)
    _ui.emit(args, doc, lambda c: c.print(doc["fid"]))
    return _ui.EXIT_OK


def build(args):
    built = _project.build(args.dir, no_source=args.no_source)
    m = built.manifest
    output = os.path.abspath(args.output or f"{m.name}-{m.version}.orb")
    if os.path.isdir(output):
        raise CommandError(f"-o {output} is a directory: give a file name", _ui.EXIT_USAGE, "usage")
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=".orb-build-", dir=os.path.dirname(output))
        with os.fdopen(fd, "wb") as f:
            f.write(built.data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, output)
    except OSError as e:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)
        raise CommandError(f"cannot write {output}: {e.strerror}", _ui.EXIT_INPUT, "io") from None
    doc = {**_describe(built), "output": output}
    _ui.emit(args, doc, lambda c: (
        c.print(f"[green]wrote[/] {output} ({len(built.data)} bytes, {len(built.files) + 1} entries"
                + (f", bytecode {m.bytecode}" if m.bytecode else "") + ")"),
        c.print(f"fid {doc['fid']}")))
    return _ui.EXIT_OK


def verify(args):
    expected = _ui.fid_argument(args.fid)
    path = os.path.abspath(args.path)
    doc = {"fid": args.fid, "path": path}
    if os.path.isdir(path):
        built = _project.build(path, no_source=args.no_source)
        actual, doc["source"], doc["package_bytes"] = built.fid, "directory", len(built.data)
    elif os.path.isfile(path):
        if args.no_source:
            raise CommandError("--no-source applies to a directory; a package file is checked as it is",
                               _ui.EXIT_USAGE, "usage")
        digest, size, data = hashlib.sha256(), 0, []
        try:
            with open(path, "rb") as f:
                while chunk := f.read(MIB):
                    digest.update(chunk)
                    size += len(chunk)
                    if size <= _package.MAX_PACKAGE_BYTES:
                        data.append(chunk)
        except OSError as e:
            raise CommandError(f"cannot read {path}: {e.strerror}", _ui.EXIT_INPUT, "io") from None
        actual = bytes([_fid.ALGORITHM_SHA256]) + digest.digest()
        doc["source"], doc["package_bytes"] = "file", size
        if size > _package.MAX_PACKAGE_BYTES:
            doc["canonical"] = False
            doc["not_canonical_because"] = f"it is over the {_package.MAX_PACKAGE_BYTES}-byte package cap"
        else:
            try:
                _package.unpack(b"".join(data))
                doc["canonical"] = True
            except _package.PackageError as e:
                doc["canonical"], doc["not_canonical_because"] = False, str(e)
    else:
        raise CommandError(f"{path} is neither a package file nor a function directory", _ui.EXIT_INPUT, "input")
    doc["actual_fid"] = _fid.to_text(actual)
    doc["ok"] = doc["match"] = actual == expected

    def human(c):
        if doc["match"]:
            c.print(f"[green]OK[/] {path} hashes to {args.fid}")
        else:
            c.print(f"[red]MISMATCH[/] {path} hashes to {doc['actual_fid']}, not {args.fid}")
        if doc.get("canonical") is False:
            c.print(f"[yellow]note[/]: not a canonical package ({doc['not_canonical_because']})")

    _ui.emit(args, doc, human)
    return _ui.EXIT_OK if doc["match"] else _ui.EXIT_FAILED


# --- run -------------------------------------------------------------------------------------------


def _input_bytes(args):
    if args.data is not None:
        return args.data.encode("utf-8")
    if args.data_file is not None:
        if args.data_file == "-":
            return sys.stdin.buffer.read()
        try:
            with open(args.data_file, "rb") as f:
                return f.read()
        except OSError as e:
            raise CommandError(f"--data-file {args.data_file}: {e.strerror}", _ui.EXIT_INPUT, "io") from None
    if sys.stdin is None or sys.stdin.isatty():
        return b""
    return sys.stdin.buffer.read()


def _unpacked(built):
    """The package's files in a fresh directory, as a host unpacks them: what runs is what ships."""
    root = tempfile.mkdtemp(prefix="orb-run-")
    os.chmod(root, 0o755)  # the jail's per-call uid reads it through a bind mount
    for f in built.files:
        path = os.path.join(root, *f.path.split("/"))
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        with open(path, "wb") as out:
            out.write(f.data)
        os.chmod(path, 0o755 if f.executable else 0o644)
    return root


def _result_json(result):
    doc = {"status": result.status.name, "message": result.message,
           "log": result.log.decode("utf-8", errors="backslashreplace"),
           "timing_ms": {"queue": result.queue_ms, "boot": result.boot_ms, "exec": result.exec_ms}}
    try:
        doc["output"] = result.output.decode("utf-8")
    except UnicodeDecodeError:
        doc["output_base64"] = base64.b64encode(result.output).decode("ascii")
    return doc


def run(args):
    import shutil

    built = _project.build(args.dir, no_source=args.no_source)
    m = built.manifest
    calls = list(m.samples) if args.samples else [None]
    data = None if args.samples else _input_bytes(args)
    root = _unpacked(built)
    try:
        outcome = _run_in_jail(built, root, calls, data, args.allow_unconfined)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if "error" in outcome and not outcome.get("interrupted"):
        raise CommandError(f"the local jail could not run the function: {outcome['error']}", _ui.EXIT_JAIL, "jail")
    results = outcome["results"]
    if outcome.get("interrupted") or len(results) < len(calls):
        finished = sum(r.status.name != "INTERNAL" for r in results)
        raise CommandError(f"interrupted: {finished} of {len(calls)} runs finished", _ui.EXIT_INTERRUPTED,
                           "interrupted")
    fid_text = _fid.to_text(built.fid)
    jail_missing = [r for r in results if r.status.name in ("REFUSED", "INTERNAL")]
    if args.samples:
        return _report_samples(args, m, fid_text, results, jail_missing)
    (result,) = results
    doc = {"ok": result.status.name == "OK", "fid": fid_text, **_result_json(result)}
    if args.json:
        _ui.emit(args, doc, None)
    else:
        sys.stdout.buffer.write(result.output)
        sys.stdout.flush()
        if result.log:
            sys.stderr.buffer.write(result.log)
        if result.status.name != "OK":
            print(f"orb run: {result.status.name}: {result.message}".rstrip(": "), file=sys.stderr)
    if jail_missing:
        return _ui.EXIT_JAIL
    return _ui.EXIT_OK if doc["ok"] else _ui.EXIT_FAILED


def sample_rows(m, results):
    """One JSON row per sample run: its result, whether it passed, and why not."""
    rows = []
    for i, (sample, result) in enumerate(zip(m.samples, results)):
        why = None
        if result.status.name != "OK":
            why = f"{result.status.name}: {result.message}".rstrip(": ")
        else:
            why = sample.check(result.output)
        row = {"index": i, "name": sample.name or f"sample {i}", "passed": why is None, **_result_json(result)}
        if why:
            row["why"] = why
        rows.append(row)
    return rows


def print_sample_rows(c, rows):
    for r in rows:
        mark = "[green]PASS[/]" if r["passed"] else "[red]FAIL[/]"
        c.print(f"{mark} {r['name']} ({r['timing_ms']['exec']:.0f} ms)")
        if not r["passed"]:
            c.print(f"     {r['why']}", markup=False)
            if r["log"].strip():
                c.print("     log: " + r["log"].strip()[-600:].replace("\n", "\n          "), markup=False)


def _report_samples(args, m, fid_text, results, jail_missing):
    rows = sample_rows(m, results)
    passed = sum(r["passed"] for r in rows)
    doc = {"ok": passed == len(rows), "fid": fid_text, "passed": passed, "failed": len(rows) - passed,
           "samples": rows}

    def human(c):
        print_sample_rows(c, rows)
        c.print(f"{passed}/{len(rows)} samples passed")

    _ui.emit(args, doc, human)
    if jail_missing:
        return _ui.EXIT_JAIL
    return _ui.EXIT_OK if doc["ok"] else _ui.EXIT_FAILED


def quiet_logging():
    """Send the library's warnings and errors (not its chatter) to stderr: a verb prints its own output."""
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    observer = FilteringLogObserver(textFileLogObserver(sys.stderr),
                                    [LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)


def run_calls(reactor, built, root, calls, data, allow_unconfined, box):
    """
    Start the real executor, run each call in turn (appending to
    ``box["results"]``), stop it. A Deferred that fires when it is stopped;
    ``box["error"]`` says why the jail could not run them. Stops early once
    ``box["interrupted"]`` is set; ``box["executor"]`` is the executor, for
    a shutdown trigger to stop.
    """
    from twisted.internet import defer

    from orb.exec import ExecConfig, Executor, RuntimeSpec

    m = built.manifest
    timeout_s = m.timeout_ms / 1000
    spec = RuntimeSpec(runtime=m.runtime, entry=m.entry, memory_mb=m.memory_mb, timeout_s=timeout_s,
                       reuse=m.isolation if m.runtime == "python" else "per-call")
    config = ExecConfig(allow_unconfined=allow_unconfined, max_timeout_s=max(300.0, timeout_s),
                        max_memory_mb=max(2048, m.memory_mb), max_concurrent=1)
    executor = box["executor"] = Executor(reactor, config)
    fid_text = _fid.to_text(built.fid)
    box.setdefault("results", [])

    @defer.inlineCallbacks
    def go():
        try:
            yield executor.start()
            for i, sample in enumerate(calls):
                if box.get("interrupted"):
                    break
                given = sample.input if sample is not None else data
                result = yield executor.invoke(fid_text, root, spec, given, deadline_s=timeout_s,
                                               request_id=f"orb-run-{i}")
                box["results"].append(result)
        except Exception as e:
            box["error"] = str(e) or type(e).__name__
        finally:
            yield executor.stop()

    return go()


def _run_in_jail(built, root, calls, data, allow_unconfined):
    """Run ``calls`` with :func:`run_calls` under the real reactor. {"results": [...]} or {"error": text}."""
    from twisted.internet import reactor

    quiet_logging()
    box = {"results": [], "done": False}

    def on_shutdown():
        # Ctrl-C (or SIGTERM) stops the reactor before the runs are done: stop the
        # zygote and every child before the process exits, and say so.
        if not box["done"]:
            box["interrupted"] = True
        executor = box.get("executor")
        return executor.stop() if executor is not None else None

    def go():
        d = run_calls(reactor, built, root, calls, data, allow_unconfined, box)

        def finished(_):
            box["done"] = True
            if reactor.running and not box.get("interrupted"):
                reactor.stop()

        d.addBoth(finished)

    reactor.addSystemEventTrigger("before", "shutdown", on_shutdown)
    reactor.callWhenRunning(go)
    reactor.run(installSignalHandlers=True)
    return box
