# -*- test-case-name: tests.test_package -*-
"""
The canonical package (RFC Section 9.2): a deterministic POSIX ustar
archive of a function's files plus its manifest, so that the same source
directory gives the same bytes, and so the same fid, on any machine.

Pure: ``pack`` takes file contents and returns bytes; only
``pack_directory`` reads the file system (it is a convenience for the CLI
and the tests, and does no other I/O).

    entries = [PackageFile("main.py", b"...", executable=False), ...]
    data = pack(entries, manifest={"name": "adder", "runtime": "python", "entry": "main.py"})
    fid_of_package(data)   # the raw fid; orb.protocol.fid.to_text() for text

``unpack`` reads a package back and refuses anything that is not in
canonical form, so a receiver can check a package it did not pack.

What goes in from a directory: every regular file, except what the default
ignore list (:data:`DEFAULT_IGNORE`: VCS directories, ``__pycache__``,
editor and OS droppings, ``orb.toml`` and ``.orbignore`` themselves) and the
directory's ``.orbignore`` exclude. ``.orbignore`` takes gitignore-style
lines (see :class:`IgnoreRules`). A symbolic link, device, FIFO or socket
that is not ignored stops the packing with an error naming it.
"""

import os
import re
import stat

import attrs
import rfc8785

from orb.protocol import fid as _fid

BLOCK = 512
MANIFEST_NAME = "orb-manifest.json"
MAX_PATH_BYTES = 255  # prefix (155) + "/" + name (100), the most a ustar header can name
NAME_BYTES = 100
PREFIX_BYTES = 155
MAX_FILE_BYTES = 8**11 - 1  # the size field holds 11 octal digits
MODE_FILE = 0o644
MODE_EXECUTABLE = 0o755
REQUIRED_MANIFEST_KEYS = ("name", "runtime", "entry")
# The default size cap of a canonical package, headers and end blocks
# included. The tracker's --max-package-bytes option defaults to it, and
# `orb build` refuses to write a bigger package.
MAX_PACKAGE_BYTES = 64 * 1024 * 1024


class PackageError(ValueError):
    """The input cannot be made into (or is not) a canonical package."""


class PackageTooLarge(PackageError):
    """The package would pass the size cap."""


@attrs.frozen
class PackageFile:
    """One regular file of a package: its path (``/``-separated, relative), bytes and execute bit."""

    path: str
    data: bytes
    executable: bool = False


# --- paths ------------------------------------------------------------------------


def check_path(path):
    """Raise PackageError unless ``path`` may name a package entry; returns its UTF-8 bytes."""
    if not isinstance(path, str) or not path:
        raise PackageError("a package path is non-empty text")
    try:
        raw = path.encode("utf-8")
    except UnicodeEncodeError:
        raise PackageError(f"{path!r} is not valid UTF-8") from None
    if len(raw) > MAX_PATH_BYTES:
        raise PackageError(f"{path!r} is {len(raw)} bytes long; at most {MAX_PATH_BYTES} fit a ustar header")
    if "\x00" in path or "\\" in path:
        raise PackageError(f"{path!r} contains NUL or a backslash")
    for part in path.split("/"):
        if part in ("", ".", ".."):
            raise PackageError(f"{path!r} has an empty, '.' or '..' component (or a leading or trailing '/')")
    split_path(raw)  # refuses paths that no name/prefix split can hold
    return raw


def split_path(raw):
    """
    The (prefix, name) byte strings of a ustar header for a path (RFC 9.2):
    a path of at most 100 bytes is the name, with an empty prefix; a longer
    one is split at the last "/" that leaves at most 155 bytes before it,
    and the part after that "/" (at most 100 bytes, not empty) is the name.
    """
    if len(raw) <= NAME_BYTES:
        return b"", raw
    cut = raw.rfind(b"/", 0, PREFIX_BYTES + 1)
    if cut <= 0:
        raise PackageError(f"{raw!r} has no '/' within its first {PREFIX_BYTES + 1} bytes to split at")
    prefix, name = raw[:cut], raw[cut + 1 :]
    if not name or len(name) > NAME_BYTES:
        raise PackageError(f"{raw!r}: the part after the split is {len(name)} bytes; 1..{NAME_BYTES} fit")
    return prefix, name


# --- the manifest --------------------------------------------------------------------


def manifest_bytes(manifest):
    """The manifest entry's bytes: the RFC 8785 (JCS) canonical JSON of the object (RFC 2.7)."""
    if not isinstance(manifest, dict):
        raise PackageError("the manifest is a JSON object")
    for key in REQUIRED_MANIFEST_KEYS:
        if not isinstance(manifest.get(key), str) or not manifest[key]:
            raise PackageError(f"the manifest needs a non-empty text {key!r}")
    _integers_only(manifest)
    try:
        return rfc8785.dumps(manifest)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as e:
        raise PackageError(f"the manifest is not I-JSON: {e}") from None


def _integers_only(value):
    """RFC 2.7 rule 1: ORB JSON holds integers only (JCS itself would accept 1.5)."""
    if isinstance(value, float):
        raise PackageError(f"the manifest holds the non-integer number {value!r}; ORB JSON has integers only")
    if isinstance(value, dict):
        for item in value.values():
            _integers_only(item)
    elif isinstance(value, list):
        for item in value:
            _integers_only(item)


# --- packing -------------------------------------------------------------------------------


def _octal(value, digits):
    return b"%0*o" % (digits, value) + b"\x00"


def header(path_bytes, size, executable):
    """The 512-byte ustar header of one regular file, as RFC 9.2 fixes every byte of it."""
    if not 0 <= size <= MAX_FILE_BYTES:
        raise PackageError(f"{path_bytes!r} is {size} bytes; a ustar entry holds at most {MAX_FILE_BYTES}")
    prefix, name = split_path(path_bytes)
    fields = [
        name.ljust(100, b"\x00"),  # name
        _octal(MODE_EXECUTABLE if executable else MODE_FILE, 7),  # mode
        _octal(0, 7),  # uid
        _octal(0, 7),  # gid
        _octal(size, 11),  # size
        _octal(0, 11),  # mtime
        b" " * 8,  # chksum, counted as spaces
        b"0",  # typeflag: regular file
        b"\x00" * 100,  # linkname
        b"ustar\x00",  # magic
        b"00",  # version
        b"\x00" * 32,  # uname
        b"\x00" * 32,  # gname
        b"\x00" * 8,  # devmajor: empty for a regular file, as Python's tarfile writes it
        b"\x00" * 8,  # devminor
        prefix.ljust(155, b"\x00"),  # prefix
        b"\x00" * 12,  # pad
    ]
    block = bytearray(b"".join(fields))
    assert len(block) == BLOCK
    checksum = sum(block)
    block[148:156] = b"%06o" % checksum + b"\x00 "
    return bytes(block)


def pack(files, manifest, max_package_bytes=None):
    """
    The canonical package of ``files`` (PackageFile) and ``manifest`` (a dict):
    entries sorted by the UTF-8 bytes of their paths, the manifest among them
    as ``orb-manifest.json``. A file already named ``orb-manifest.json`` is
    refused: the manifest is given once, as an object. With
    ``max_package_bytes``, a package that would be bigger is refused
    (PackageTooLarge) before it is built.
    """
    entries = {MANIFEST_NAME.encode(): (manifest_bytes(manifest), False)}
    for f in files:
        raw = check_path(f.path)
        if raw in entries:
            what = "the manifest" if raw == MANIFEST_NAME.encode() else "another file"
            raise PackageError(f"{f.path!r} has the same path as {what}")
        entries[raw] = (bytes(f.data), bool(f.executable))
    if manifest["entry"].encode("utf-8") not in entries:
        raise PackageError(f"the manifest's entry {manifest['entry']!r} is not a file of the package")
    if max_package_bytes is not None:
        total = package_size(len(data) for data, _ in entries.values())
        if total > max_package_bytes:
            raise PackageTooLarge(f"the package would be {total} bytes, over the {max_package_bytes}-byte cap")
    out = []
    for raw in sorted(entries):
        data, executable = entries[raw]
        out.append(header(raw, len(data), executable))
        out.append(data)
        out.append(b"\x00" * (-len(data) % BLOCK))
    out.append(b"\x00" * (2 * BLOCK))
    return b"".join(out)


def fid_of_package(data):
    """The raw fid of canonical package bytes (RFC 9.1): 0x01 || SHA-256(data)."""
    return _fid.fid_for(data)


def package_size(sizes):
    """The size in bytes of the canonical package of files with these data sizes (the manifest among them)."""
    return sum(BLOCK + size + (-size % BLOCK) for size in sizes) + 2 * BLOCK


# --- what goes in from a directory ---------------------------------------------------------

IGNORE_FILE = ".orbignore"
DEFAULT_IGNORE = (
    # version control
    ".git/", ".hg/", ".svn/", ".bzr/", "_darcs/", "CVS/", ".gitignore", ".gitattributes", ".gitmodules",
    # Python droppings (`orb build --no-source` makes its own .pyc files)
    "__pycache__/", "*.pyc", "*.pyo", ".venv/", ".mypy_cache/", ".pytest_cache/", ".ruff_cache/", ".tox/",
    # editors and operating systems
    "*~", "*.swp", "*.swo", ".*.swp", ".#*", "#*#", ".idea/", ".vscode/", ".DS_Store", "Thumbs.db", "desktop.ini",
    # the function's own build inputs and outputs: the manifest goes in as orb-manifest.json
    "/orb.toml", "/.orbignore", "*.orb",
)


def _glob_regex(pattern):
    """A gitignore-style glob as a regular expression over a /-separated path."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 2 :]:
            close = pattern.index("]", i + 2)
            body = pattern[i + 1 : close]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = close + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)


@attrs.frozen
class IgnoreRule:
    pattern: str
    regex: re.Pattern
    negate: bool
    directory_only: bool


class IgnoreRules:
    """
    Which paths of a function directory stay out of its package: a subset of
    gitignore. One pattern a line; blank lines and lines starting with ``#``
    are skipped. ``*`` and ``?`` match within one path component, ``[abc]``
    one character of a set, ``**`` any number of components. A pattern with
    a ``/`` at its start or middle is anchored at the directory's root; any
    other matches a name at any depth. A trailing ``/`` matches directories
    only. ``!pattern`` takes a path back in. The last matching line wins,
    and an ignored directory is not entered, so nothing under it can be
    taken back in (as in git).
    """

    def __init__(self, lines=DEFAULT_IGNORE):
        self.rules = []
        self.extend(lines)

    def extend(self, lines):
        for line in lines:
            line = line.rstrip("\n").rstrip(" ")
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            if negate:
                line = line[1:]
            directory_only = line.endswith("/")
            line = line.rstrip("/")
            if not line:
                continue
            anchored = "/" in line
            body = _glob_regex(line.lstrip("/"))
            regex = re.compile(body if anchored else "(?:.*/)?" + body, re.S)
            self.rules.append(IgnoreRule(line, regex, negate, directory_only))
        return self

    def ignored(self, path, is_dir=False):
        """Whether the /-separated relative ``path`` stays out of the package."""
        verdict = False
        for rule in self.rules:
            if rule.directory_only and not is_dir:
                continue
            if rule.regex.fullmatch(path):
                verdict = not rule.negate
        return verdict


_KINDS = (
    (stat.S_ISLNK, "a symbolic link", "replace it with a copy of the file it points to"),
    (stat.S_ISCHR, "a character device", "remove it"),
    (stat.S_ISBLK, "a block device", "remove it"),
    (stat.S_ISFIFO, "a FIFO (named pipe)", "remove it"),
    (stat.S_ISSOCK, "a socket", "remove it"),
)


def _refuse_special(rel, mode):
    for test, what, fix in _KINDS:
        if test(mode):
            break
    else:
        what, fix = "not a regular file or directory", "remove it"
    raise PackageError(f"{rel!r} is {what}; a package holds only regular files: {fix}, "
                       f"or list it in {IGNORE_FILE}")


def read_directory(root, ignore=None, max_package_bytes=MAX_PACKAGE_BYTES, manifest_bytes_hint=0):
    """
    The regular files under ``root`` as PackageFiles, and the manifest found
    at ``root/orb-manifest.json`` (parsed; None if absent). Directories are
    walked in sorted order (empty ones leave no trace) except those that
    ``ignore`` (an IgnoreRules; by default DEFAULT_IGNORE plus the
    directory's .orbignore) leaves out; a symbolic link, device, FIFO or
    socket that is not ignored is refused rather than silently skipped.
    Times, owners and permission bits other than "any execute bit" are not
    read. Sizes are added up before any file is read, so a directory whose
    package would pass ``max_package_bytes`` (None: no cap) is refused
    without reading it.
    """
    import json

    root = os.fspath(root)
    if ignore is None:
        ignore = rules_for(root)
    found = []  # (rel, full, size, executable)
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        full_dir = os.path.join(root, *rel_dir.split("/")) if rel_dir else root
        for name in sorted(os.listdir(full_dir)):
            rel = f"{rel_dir}/{name}" if rel_dir else name
            full = os.path.join(full_dir, name)
            info = os.lstat(full)
            is_dir = stat.S_ISDIR(info.st_mode)
            if ignore.ignored(rel, is_dir):
                continue
            if is_dir:
                stack.append(rel)
            elif stat.S_ISREG(info.st_mode):
                found.append((rel, full, info.st_size, bool(info.st_mode & 0o111)))
            else:
                _refuse_special(rel, info.st_mode)
    if max_package_bytes is not None:
        total = package_size([size for _, _, size, _ in found] + [manifest_bytes_hint])
        if total > max_package_bytes:
            biggest = sorted(found, key=lambda f: -f[2])[:3]
            names = ", ".join(f"{rel} ({size} bytes)" for rel, _, size, _ in biggest)
            raise PackageTooLarge(f"the package would be {total} bytes, over the {max_package_bytes}-byte cap; "
                                  f"the largest files are {names}: leave some out with {IGNORE_FILE}")
    files, manifest = [], None
    for rel, full, _size, executable in found:
        with open(full, "rb") as fh:
            data = fh.read()
        if rel == MANIFEST_NAME:
            try:
                manifest = json.loads(data, object_pairs_hook=_no_duplicates)
            except ValueError as e:
                raise PackageError(f"{MANIFEST_NAME} is not JSON: {e}") from None
            continue
        files.append(PackageFile(rel, data, executable))
    return files, manifest


def rules_for(root):
    """DEFAULT_IGNORE followed by the lines of ``root/.orbignore``, if there is one."""
    rules = IgnoreRules()
    path = os.path.join(os.fspath(root), IGNORE_FILE)
    if os.path.isfile(path):
        with open(path, encoding="utf-8", errors="strict") as f:
            try:
                rules.extend(f.read().splitlines())
            except UnicodeDecodeError:
                raise PackageError(f"{IGNORE_FILE} is not UTF-8 text") from None
    return rules


def _no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError("duplicate key in an object")
    return dict(pairs)


def pack_directory(root, manifest=None, ignore=None, max_package_bytes=MAX_PACKAGE_BYTES):
    """The canonical package of a directory; ``manifest`` overrides its orb-manifest.json."""
    files, found = read_directory(root, ignore=ignore, max_package_bytes=max_package_bytes)
    manifest = manifest if manifest is not None else found
    if manifest is None:
        raise PackageError(f"no manifest given and no {MANIFEST_NAME} in {root}")
    return pack(files, manifest, max_package_bytes=max_package_bytes)


# --- reading back ---------------------------------------------------------------------------


_ENTRY_KINDS = {b"1": "a hard-link", b"2": "a symbolic-link", b"3": "a character-device", b"4": "a block-device",
                b"5": "a directory", b"6": "a FIFO"}


def unpack(data):
    """
    The files and manifest of a canonical package. Raises PackageError for
    anything that is not exactly what ``pack`` produces: a package is
    canonical if and only if packing what it holds gives it back.
    """
    import json

    files, manifest, offset = [], None, 0
    while True:
        if len(data) - offset < BLOCK:
            raise PackageError("the archive ends without its two zero blocks")
        block = data[offset : offset + BLOCK]
        if block == b"\x00" * BLOCK:
            break
        name = block[0:100].rstrip(b"\x00")
        prefix = block[345:500].rstrip(b"\x00")
        field = block[124:135]
        if not field.isdigit() or b"8" in field or b"9" in field:
            raise PackageError(f"bad size field at offset {offset}")
        size = int(field, 8)
        raw = prefix + b"/" + name if prefix else name
        try:
            path = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise PackageError(f"a path at offset {offset} is not UTF-8") from None
        kind = _ENTRY_KINDS.get(block[156:157])
        if kind is not None:
            raise PackageError(f"{path!r} is {kind} entry; a package holds only regular files")
        check_path(path)  # refuses '..', absolute and empty components by name
        start, offset = offset + BLOCK, offset + BLOCK + size + (-size % BLOCK)
        if offset > len(data):
            raise PackageError(f"{path!r} runs past the end of the archive")
        content = data[start : start + size]
        executable = block[100:108] == _octal(MODE_EXECUTABLE, 7)
        if path == MANIFEST_NAME:
            try:
                manifest = json.loads(content, object_pairs_hook=_no_duplicates)
            except ValueError as e:
                raise PackageError(f"{MANIFEST_NAME} is not JSON: {e}") from None
        else:
            files.append(PackageFile(path, content, executable))
    if manifest is None:
        raise PackageError(f"the archive has no {MANIFEST_NAME}")
    if pack(files, manifest) != data:
        raise PackageError("the archive is not in canonical form (RFC 9.2)")
    return files, manifest
