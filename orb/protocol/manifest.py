# -*- test-case-name: tests.test_manifest -*-
"""
The function manifest: ``orb.toml`` as people write it, and the canonical
JSON (``orb-manifest.json``, RFC Section 9.7) that the package carries.

It lives in ``orb.protocol`` because three roles read the same document
with the same rules: the ``orb`` command (from ``orb.toml``), the tracker
(the ``manifest`` of DEPLOY) and a peer deciding on an OFFER (runtime,
memory, bytecode version). One validator, no I/O, no reactor: callers pass
text or a parsed JSON object in and get a :class:`Manifest` or a
:class:`ManifestError` out.

    m = from_toml(text)            # orb.toml  -> Manifest (defaults filled in)
    m = from_json(obj)             # orb-manifest.json (parsed) -> Manifest
    m.to_json()                    # the JSON object; canonical_bytes(m) its JCS bytes

Every problem names the field, the value and the fix; all problems of a
document are reported at once.

Samples. An ``orb.toml`` ``[[sample]]`` gives its input as exactly one of

- ``input = "text"``: the UTF-8 bytes of the string;
- ``input_json = <any TOML value>``: the RFC 8785 (JCS) canonical JSON of it;
- ``input_base64 = "..."``: raw bytes, standard base64;

and its expected output as exactly one of

- ``output = "text"``: the output's bytes equal the UTF-8 of the string;
- ``output_json = <value>``: the output parses as JSON equal to the value;
- ``output_base64 = "..."``: the output equals these bytes.

In the JSON manifest a sample is ``{"name": ..., "input": {"text"|"base64": s},
"output": {"text"|"base64"|"json": s}}``; ``input_json`` becomes its text
and ``output_json`` the JCS text of the expected value.
"""

import base64
import binascii
import difflib
import json
import re
import tomllib

import attrs
import rfc8785

from orb.protocol.package import PackageError, check_path

MANIFEST_VERSION = 1
RUNTIMES = ("python", "exec")
ISOLATIONS = ("per-call", "per-function")
VISIBILITIES = ("public", "private")
PAYMENT_CALLERS = ("authorized", "any")  # whose calls earn the hosts vouchers (RFC 9.7, 10.10)
PAYMENT_FIELDS = ("required", "callers")
DEFAULT_ENTRY = {"python": "main.py", "exec": "main"}
DEFAULT_TIMEOUT_MS = 10_000
MAX_TIMEOUT_MS = 300_000
DEFAULT_MEMORY_MB = 256
MIN_MEMORY_MB, MAX_MEMORY_MB = 32, 16_384
DEFAULT_REPLICAS = 3
MAX_REPLICAS = 32
MAX_VERSION_CHARS = 64
MAX_DESCRIPTION_BYTES = 1024
MAX_SAMPLES = 32
MAX_SAMPLE_BYTES = 16 * 1024  # one sample's input, or its expected output
MAX_MANIFEST_BYTES = 256 * 1024  # the canonical JSON, samples included
MAX_INPUT_BYTES = 1024 * 1024  # a call's input: the executor's cap, and the default of max_input_bytes

LABEL_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
VERSION_RE = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+_-]*\Z")
BYTECODE_RE = re.compile(r"[a-z][a-z0-9_]*-[0-9]{2,4}\Z")  # sys.implementation.cache_tag, e.g. cpython-312

TOML_FIELDS = ("name", "version", "runtime", "entry", "description", "timeout_ms", "memory_mb", "isolation",
               "replicas", "idempotent", "pure", "visibility", "max_input_bytes", "payment", "sample")
SAMPLE_FIELDS = ("name", "input", "input_json", "input_base64", "output", "output_json", "output_base64")


@attrs.frozen
class Problem:
    """One thing wrong with a manifest: where, what was there, and what to do."""

    field: str
    value: object
    fix: str

    def __str__(self):
        shown = "(missing)" if self.value is _MISSING else _show(self.value)
        return f"{self.field} = {shown}: {self.fix}"


class ManifestError(ValueError):
    """A manifest that does not validate; ``problems`` lists every reason."""

    def __init__(self, problems, source="orb.toml"):
        self.problems = list(problems)
        self.source = source
        super().__init__("\n".join(f"{source}: {p}" for p in self.problems))


_MISSING = object()


def _show(value):
    text = json.dumps(value, ensure_ascii=False) if isinstance(value, (str, bool, int, float)) else repr(value)
    if not _encodable(text):
        text = json.dumps(value) if isinstance(value, str) else ascii(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _encodable(text):
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _lone_surrogate(value):
    """The path of the first string (or key) holding a lone surrogate, or None (RFC 2.7 rule 3)."""
    if isinstance(value, str):
        return "" if not _encodable(value) else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        if isinstance(key, str) and not _encodable(key):
            return ascii(key)
        inner = _lone_surrogate(item)
        if inner is not None:
            return f"{key}{'.' + inner if inner else ''}"
    return None


@attrs.frozen
class Sample:
    """A test run: input bytes and the expected output."""

    input: bytes
    output_kind: str  # "text", "base64" or "json"
    output: str  # text, base64 text or JCS text, as output_kind says
    name: str = ""
    input_kind: str = "text"  # how the JSON manifest writes the input: "text" or "base64"

    def expected_bytes(self):
        """The exact bytes expected, or None for a JSON comparison."""
        if self.output_kind == "text":
            return self.output.encode("utf-8")
        if self.output_kind == "base64":
            return base64.b64decode(self.output)
        return None

    def check(self, output):
        """None when ``output`` (bytes) is what the sample expects, else a sentence saying how it differs."""
        expected = self.expected_bytes()
        if expected is not None:
            if output == expected:
                return None
            return f"expected {_show_bytes(expected)}, got {_show_bytes(output)}"
        try:
            got = json.loads(output)
        except ValueError:
            return f"expected JSON equal to {self.output}, got non-JSON {_show_bytes(output)}"
        if _json_equal(got, json.loads(self.output)):
            return None
        return f"expected JSON equal to {self.output}, got {rfc8785.dumps(got).decode('utf-8')[:200]}"

    def to_json(self):
        if self.input_kind == "text":
            given = {"text": self.input.decode("utf-8")}
        else:
            given = {"base64": base64.b64encode(self.input).decode("ascii")}
        return {"name": self.name, "input": given, "output": {self.output_kind: self.output}}


def _json_equal(a, b):
    """JSON value equality where true is not 1 (Python's == says it is)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b))
    return a == b


def _show_bytes(data):
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return f"{len(data)} bytes of binary (base64 {base64.b64encode(data[:48]).decode()}...)"
    return _show(text)


@attrs.frozen
class Manifest:
    """A valid manifest with every default filled in."""

    name: str
    version: str
    runtime: str
    entry: str
    samples: tuple
    description: str = ""
    timeout_ms: int = DEFAULT_TIMEOUT_MS
    memory_mb: int = DEFAULT_MEMORY_MB
    isolation: str = "per-call"
    replicas: int = DEFAULT_REPLICAS
    idempotent: bool = False
    pure: bool = False
    visibility: str = "public"
    bytecode: str | None = None  # set by ``orb build --no-source``: the cache tag the .pyc files need
    max_input_bytes: int | None = None  # a call's largest input; None: MAX_INPUT_BYTES (RFC 9.7)
    payment_required: bool = False  # out of escrow funds: calls are answered payment_required (HTTP 402)
    payment_callers: str = "authorized"  # "any": calls from every caller earn vouchers, not only authorized ones

    @property
    def payment(self):
        """The ``payment`` member of the JSON manifest, or None when both of its fields are the defaults."""
        if not self.payment_required and self.payment_callers == "authorized":
            return None
        return {"required": self.payment_required, "callers": self.payment_callers}

    @property
    def input_cap_bytes(self):
        """The largest input a call may carry."""
        return MAX_INPUT_BYTES if self.max_input_bytes is None else self.max_input_bytes

    def to_json(self):
        """The JSON object of orb-manifest.json (RFC 9.7)."""
        doc = {
            "manifest_version": MANIFEST_VERSION,
            "name": self.name,
            "version": self.version,
            "runtime": self.runtime,
            "entry": self.entry,
            "description": self.description,
            "timeout_ms": self.timeout_ms,
            "memory_mb": self.memory_mb,
            "isolation": self.isolation,
            "replicas": self.replicas,
            "idempotent": self.idempotent,
            "pure": self.pure,
            "visibility": self.visibility,
            "samples": [s.to_json() for s in self.samples],
        }
        if self.bytecode is not None:
            doc["bytecode"] = self.bytecode
        if self.max_input_bytes is not None:
            doc["max_input_bytes"] = self.max_input_bytes
        if self.payment is not None:
            doc["payment"] = self.payment
        return doc

    def runs_on(self, cache_tag):
        """Whether a host whose ``sys.implementation.cache_tag`` is ``cache_tag`` can run this package."""
        return self.bytecode is None or self.bytecode == cache_tag


def canonical_bytes(manifest):
    """The bytes of the package's orb-manifest.json: RFC 8785 JCS of ``manifest.to_json()``."""
    return rfc8785.dumps(manifest.to_json())


# --- orb.toml ------------------------------------------------------------------------------


def from_toml(text, source="orb.toml"):
    """A Manifest from the text of an orb.toml; raises ManifestError naming every bad field."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ManifestError([Problem("(file)", f"byte {e.start}", "save the file as UTF-8")], source) from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ManifestError([Problem("(syntax)", str(e), "fix the TOML syntax (see https://toml.io)")],
                            source) from None
    problems = []
    for key in doc:
        if key == "bytecode":
            problems.append(Problem(key, doc[key], "remove it: `orb build --no-source` writes it into the package"))
        elif key == "samples":
            problems.append(Problem(key, "...", "write each sample as a [[sample]] table"))
        elif key not in TOML_FIELDS:
            problems.append(Problem(key, doc[key], "remove it: orb.toml has no such field" + _did_you_mean(key, TOML_FIELDS)))
    raw_samples = doc.get("sample", [])
    samples = []
    if not isinstance(raw_samples, list) or not all(isinstance(s, dict) for s in raw_samples):
        problems.append(Problem("sample", raw_samples, "write samples as [[sample]] tables"))
    else:
        for i, raw in enumerate(raw_samples):
            samples.append(_sample_from_toml(f"sample[{i}]", raw, problems))
    fields = {k: v for k, v in doc.items() if k in TOML_FIELDS and k != "sample"}
    if isinstance(fields.get("payment"), dict):
        fields["payment"] = {"required": False, "callers": "authorized", **fields["payment"]}
    return _build(fields, samples, problems, source, bytecode=None)


def _did_you_mean(key, choices):
    close = difflib.get_close_matches(key, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _sample_from_toml(where, raw, problems):
    for key in raw:
        if key in TOML_FIELDS and key not in SAMPLE_FIELDS:
            problems.append(Problem(f"{where}.{key}", raw[key],
                                    "move it above the first [[sample]]: in TOML, the lines after a "
                                    "[[sample]] header belong to that sample"))
        elif key not in SAMPLE_FIELDS:
            problems.append(Problem(f"{where}.{key}", raw[key],
                                    "remove it: a sample has name, one input* and one output* field"
                                    + _did_you_mean(key, SAMPLE_FIELDS)))
    name = raw.get("name", "")
    if not isinstance(name, str) or len(name) > 200:
        problems.append(Problem(f"{where}.name", name, "give a short text name (at most 200 characters)"))
        name = ""
    inputs = [k for k in ("input", "input_json", "input_base64") if k in raw]
    outputs = [k for k in ("output", "output_json", "output_base64") if k in raw]
    data, kind = b"", "text"
    if len(inputs) != 1:
        problems.append(Problem(f"{where}.input", inputs or _MISSING,
                                "give exactly one of input = \"text\", input_json = <value>, input_base64 = \"...\""))
    else:
        key = inputs[0]
        value = raw[key]
        if key == "input":
            if isinstance(value, str):
                data = value.encode("utf-8")
            else:
                problems.append(Problem(f"{where}.input", value,
                                        "input is text; use input_json for a JSON value, input_base64 for bytes"))
        elif key == "input_json":
            try:
                data = rfc8785.dumps(value)
                kind = "text"
            except (rfc8785.CanonicalizationError, TypeError, ValueError):
                problems.append(Problem(f"{where}.input_json", value,
                                        "use only strings, integers within ±(2^53 - 1), finite floats, booleans, arrays and tables"))
        else:
            decoded = _b64(value)
            if decoded is None:
                problems.append(Problem(f"{where}.input_base64", value, "give standard base64 (A-Z a-z 0-9 + /, = padding)"))
            else:
                data = decoded
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            kind = "base64"
    if len(data) > MAX_SAMPLE_BYTES:
        problems.append(Problem(f"{where}.{inputs[0]}", f"{len(data)} bytes",
                                f"keep a sample's input within {MAX_SAMPLE_BYTES} bytes"))
    out_kind, out_text = "text", ""
    if len(outputs) != 1:
        problems.append(Problem(f"{where}.output", outputs or _MISSING,
                                "give exactly one of output = \"text\", output_json = <value>, output_base64 = \"...\""))
    else:
        key = outputs[0]
        value = raw[key]
        if key == "output":
            if isinstance(value, str):
                out_text = value
            else:
                problems.append(Problem(f"{where}.output", value,
                                        "output is text; use output_json for a JSON value, output_base64 for bytes"))
        elif key == "output_json":
            out_kind = "json"
            try:
                out_text = rfc8785.dumps(value).decode("utf-8")
            except (rfc8785.CanonicalizationError, TypeError, ValueError):
                problems.append(Problem(f"{where}.output_json", value,
                                        "use only strings, integers within ±(2^53 - 1), finite floats, booleans, arrays and tables"))
        else:
            out_kind = "base64"
            if _b64(value) is None:
                problems.append(Problem(f"{where}.output_base64", value, "give standard base64 (A-Z a-z 0-9 + /, = padding)"))
            else:
                out_text = value
        if len(out_text.encode("utf-8")) > MAX_SAMPLE_BYTES * 2:
            problems.append(Problem(f"{where}.{key}", f"{len(out_text)} characters",
                                    f"keep a sample's expected output within {MAX_SAMPLE_BYTES} bytes"))
    return Sample(input=data, input_kind=kind, output_kind=out_kind, output=out_text, name=name)


def _b64(value):
    if not isinstance(value, str):
        return None
    try:
        decoded = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    if base64.b64encode(decoded).decode("ascii") != value:
        return None  # one spelling per byte string, so the manifest stays canonical
    return decoded


# --- the shared rules -------------------------------------------------------------------------


def _int_field(fields, key, default, low, high, unit, problems):
    value = fields.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        problems.append(Problem(key, value, f"give a whole number of {unit} from {low} to {high}, "
                                            f"e.g. {key} = {default}"))
        return default
    return value


def _choice(fields, key, default, choices, problems):
    value = fields.get(key, default)
    if value not in choices:
        options = " or ".join(f'"{c}"' for c in choices)
        problems.append(Problem(key, value, f"use {options}" + (_did_you_mean(value, choices) if isinstance(value, str) else "")))
        return default
    return value


def _bool(fields, key, problems):
    value = fields.get(key, False)
    if not isinstance(value, bool):
        problems.append(Problem(key, value, f"use {key} = true or {key} = false (no quotes)"))
        return False
    return value


def _build(fields, samples, problems, source, bytecode):
    name = fields.get("name", _MISSING)
    if not isinstance(name, str) or not LABEL_RE.match(name):
        problems.append(Problem("name", name, "use 1 to 63 lowercase letters, digits and hyphens, not starting or "
                                              "ending with a hyphen (it becomes a DNS label), e.g. name = \"adder\""))
    version = fields.get("version", _MISSING)
    if not isinstance(version, str) or len(version) > MAX_VERSION_CHARS or not VERSION_RE.match(version):
        problems.append(Problem("version", version, f"give a version of at most {MAX_VERSION_CHARS} letters, digits "
                                                    "and . + _ -, starting with a letter or digit, e.g. version = \"1.0.0\""))
    runtime = fields.get("runtime", _MISSING)
    if runtime not in RUNTIMES:
        problems.append(Problem("runtime", runtime, 'use runtime = "python" (a handler(event, context) in a .py file) '
                                                    'or runtime = "exec" (a program reading stdin, writing stdout)'))
        runtime = None
    entry = fields.get("entry", DEFAULT_ENTRY.get(runtime, "main.py"))
    try:
        if not isinstance(entry, str):
            raise PackageError("not text")
        check_path(entry)
    except PackageError:
        problems.append(Problem("entry", entry, "give the path of the file to run, relative to the function "
                                                "directory, with / separators and no '..', e.g. entry = \"main.py\""))
    else:
        if runtime == "python" and not entry.endswith(".py"):
            problems.append(Problem("entry", entry, "the python runtime runs a .py file that defines "
                                                    "handler(event, context); e.g. entry = \"main.py\""))
    description = fields.get("description", "")
    if not isinstance(description, str) or len(description.encode("utf-8")) > MAX_DESCRIPTION_BYTES:
        problems.append(Problem("description", description,
                                f"give a text of at most {MAX_DESCRIPTION_BYTES} bytes of UTF-8"))
        description = ""
    timeout_ms = _int_field(fields, "timeout_ms", DEFAULT_TIMEOUT_MS, 1, MAX_TIMEOUT_MS, "milliseconds", problems)
    memory_mb = _int_field(fields, "memory_mb", DEFAULT_MEMORY_MB, MIN_MEMORY_MB, MAX_MEMORY_MB, "MiB", problems)
    replicas = _int_field(fields, "replicas", DEFAULT_REPLICAS, 1, MAX_REPLICAS, "copies", problems)
    isolation = _choice(fields, "isolation", "per-call", ISOLATIONS, problems)
    if runtime == "exec" and isolation == "per-function":
        problems.append(Problem("isolation", isolation, 'the exec runtime starts a process per call: use isolation = '
                                                        '"per-call", or runtime = "python" for a warm per-function worker'))
    visibility = _choice(fields, "visibility", "public", VISIBILITIES, problems)
    idempotent = _bool(fields, "idempotent", problems)
    pure = _bool(fields, "pure", problems)
    max_input_bytes = None
    if "max_input_bytes" in fields:
        max_input_bytes = _int_field(fields, "max_input_bytes", MAX_INPUT_BYTES, 1, MAX_INPUT_BYTES, "bytes", problems)
    payment_required, payment_callers = _payment(fields, problems)
    if pure and not idempotent:
        problems.append(Problem("idempotent", idempotent, "a pure function is idempotent too: set idempotent = true "
                                                          "(or pure = false)"))
    if not samples and not any(p.field.startswith("sample") for p in problems):
        problems.append(Problem("sample", _MISSING, "add at least one [[sample]] with an input and its expected output: "
                                                    "`orb deploy` and the tracker test-run the function with them"))
    if len(samples) > MAX_SAMPLES:
        problems.append(Problem("sample", f"{len(samples)} samples", f"keep at most {MAX_SAMPLES} samples"))
    if bytecode is not None and (not isinstance(bytecode, str) or not BYTECODE_RE.match(bytecode)):
        problems.append(Problem("bytecode", bytecode, "give the cache tag of the Python that compiled the package, "
                                                      "e.g. \"cpython-312\" (sys.implementation.cache_tag)"))
    if bytecode is not None and runtime == "exec":
        problems.append(Problem("bytecode", bytecode, "only python functions ship bytecode: remove it"))
    if problems:
        raise ManifestError(problems, source)
    manifest = Manifest(name=name, version=version, runtime=runtime, entry=entry, samples=tuple(samples),
                        description=description, timeout_ms=timeout_ms, memory_mb=memory_mb, isolation=isolation,
                        replicas=replicas, idempotent=idempotent, pure=pure, visibility=visibility, bytecode=bytecode,
                        max_input_bytes=max_input_bytes, payment_required=payment_required,
                        payment_callers=payment_callers)
    size = len(canonical_bytes(manifest))
    if size > MAX_MANIFEST_BYTES:
        raise ManifestError([Problem("sample", f"a {size}-byte manifest",
                                     f"keep the manifest within {MAX_MANIFEST_BYTES} bytes: shorten the samples")],
                            source)
    return manifest


def _payment(fields, problems):
    """(required, callers) from the ``payment`` table (TOML, defaults filled in) or object (JSON, complete)."""
    if "payment" not in fields:
        return False, "authorized"
    value = fields["payment"]
    if not isinstance(value, dict):
        problems.append(Problem("payment", value, "write it as a table: [payment] with required = true|false and "
                                                  'callers = "authorized"|"any"'))
        return False, "authorized"
    for key in value:
        if key not in PAYMENT_FIELDS:
            problems.append(Problem(f"payment.{key}", value[key], "remove it: payment has required and callers"
                                    + _did_you_mean(key, PAYMENT_FIELDS)))
    for key in PAYMENT_FIELDS:
        if key not in value:
            problems.append(Problem(f"payment.{key}", _MISSING, "the canonical manifest lists both members: add it"))
    required = value.get("required", False)
    if not isinstance(required, bool):
        problems.append(Problem("payment.required", required, "use required = true or required = false (no quotes)"))
        required = False
    callers = value.get("callers", "authorized")
    if callers not in PAYMENT_CALLERS:
        problems.append(Problem("payment.callers", callers, 'use "authorized" (the owner\'s key and holders of its '
                                                            'capability tokens) or "any" (every caller but the host)'))
        callers = "authorized"
    return required, callers


# --- orb-manifest.json ---------------------------------------------------------------------------

JSON_FIELDS = ("manifest_version", "name", "version", "runtime", "entry", "description", "timeout_ms", "memory_mb",
               "isolation", "replicas", "idempotent", "pure", "visibility", "samples", "bytecode", "max_input_bytes",
               "payment")
# Absent: no bytecode; the MAX_INPUT_BYTES input cap; payment not required and only authorized callers earn.
OPTIONAL_JSON_FIELDS = ("bytecode", "max_input_bytes", "payment")


def from_json(doc, source="orb-manifest.json"):
    """
    A Manifest from a parsed orb-manifest.json, as a tracker or a peer reads
    one: every member present (no defaults), no unknown member, and the
    same rules as orb.toml.
    """
    if not isinstance(doc, dict):
        raise ManifestError([Problem("(document)", doc, "a manifest is a JSON object")], source)
    where = _lone_surrogate(doc)
    if where is not None:
        raise ManifestError([Problem(where or "(document)", "(text with a lone surrogate)",
                                     "send valid Unicode: I-JSON has no lone surrogates (RFC 2.7)")], source)
    problems = []
    if doc.get("manifest_version") != MANIFEST_VERSION:
        problems.append(Problem("manifest_version", doc.get("manifest_version", _MISSING),
                                f"this implementation reads manifest_version {MANIFEST_VERSION}"))
    for key in doc:
        if key not in JSON_FIELDS:
            problems.append(Problem(key, doc[key], "not a member of manifest_version 1: remove it"))
    for key in JSON_FIELDS:
        if key not in doc and key not in OPTIONAL_JSON_FIELDS:
            problems.append(Problem(key, _MISSING, "the canonical manifest lists every member: add it"))
    samples = []
    raw_samples = doc.get("samples", [])
    if not isinstance(raw_samples, list):
        problems.append(Problem("samples", raw_samples, "a list of sample objects"))
        raw_samples = []
    for i, raw in enumerate(raw_samples):
        samples.append(_sample_from_json(f"samples[{i}]", raw, problems))
    fields = {k: v for k, v in doc.items() if k in JSON_FIELDS and k not in ("samples", "bytecode")}
    if doc.get("payment") == {"required": False, "callers": "authorized"}:
        problems.append(Problem("payment", doc["payment"], "omit it: these are the defaults, and the canonical "
                                                           "manifest leaves a default payment out"))
    return _build(fields, samples, problems, source, bytecode=doc.get("bytecode"))


def _sample_from_json(where, raw, problems):
    bad = Sample(input=b"", output_kind="text", output="")
    if not isinstance(raw, dict) or set(raw) != {"name", "input", "output"} or not isinstance(raw["name"], str):
        problems.append(Problem(where, raw, 'a sample is {"name": text, "input": {...}, "output": {...}}'))
        return bad
    given, expected = raw["input"], raw["output"]
    if (not isinstance(given, dict) or len(given) != 1 or not set(given) <= {"text", "base64"}
            or not isinstance(next(iter(given.values())), str)):
        problems.append(Problem(f"{where}.input", given, 'use {"text": "..."} or {"base64": "..."}'))
        return bad
    if (not isinstance(expected, dict) or len(expected) != 1 or not set(expected) <= {"text", "base64", "json"}
            or not isinstance(next(iter(expected.values())), str)):
        problems.append(Problem(f"{where}.output", expected, 'use {"text": ...}, {"base64": ...} or {"json": ...}'))
        return bad
    (in_kind, in_text), (out_kind, out_text) = next(iter(given.items())), next(iter(expected.items()))
    data = in_text.encode("utf-8") if in_kind == "text" else _b64(in_text)
    if data is None:
        problems.append(Problem(f"{where}.input.base64", in_text, "give canonical standard base64"))
        return bad
    if in_kind == "base64" and _is_utf8(data):
        problems.append(Problem(f"{where}.input.base64", in_text, "UTF-8 input is written as text"))
    if out_kind == "base64" and _b64(out_text) is None:
        problems.append(Problem(f"{where}.output.base64", out_text, "give canonical standard base64"))
    if out_kind == "json":
        try:
            if rfc8785.dumps(json.loads(out_text)).decode("utf-8") != out_text:
                raise ValueError
        except (ValueError, rfc8785.CanonicalizationError):
            problems.append(Problem(f"{where}.output.json", out_text, "give the RFC 8785 canonical JSON text"))
    return Sample(input=data, input_kind=in_kind, output_kind=out_kind, output=out_text, name=raw["name"])


def _is_utf8(data):
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
