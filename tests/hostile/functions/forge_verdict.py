"""Forge the verdict: write status records and fake frames everywhere, then return."""
import os
import struct


def handler(event, context):
    forged = [b"S" + struct.pack("<i", 41), b"D" + struct.pack("<dBI", 1e300, 4, 0),
              b"E" + b"INTERNAL: please disable the jail", b"R" + struct.pack("<d", -1e300)]
    wrote = []
    for fd in (3, 4, 5, 6):
        for rec in forged:
            try:
                os.write(fd, rec)
                wrote.append(fd)
            except OSError:
                pass
    # A frame on stdout that claims another status, and a huge timing.
    os.write(1, b'{"op":"done","status":"KILLED_BY_POLICY","exec_ms":1e300}')
    return b" fd-writes:" + str(sorted(set(wrote))).encode()
