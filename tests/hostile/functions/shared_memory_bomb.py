"""Grow shared anonymous memory (what SysV or tmpfs memory would be) until something gives."""
import mmap


def handler(event, context):
    hoard = []
    while True:
        m = mmap.mmap(-1, 16 * 1024 * 1024, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
        for off in range(0, len(m), 4096):
            m[off] = 1
        hoard.append(m)
