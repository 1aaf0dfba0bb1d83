"""List every mount with listmount(2) (x86_64 nr 458)."""
import ctypes


def handler(event, context):
    libc = ctypes.CDLL(None, use_errno=True)
    req = (ctypes.c_uint64 * 4)(24, 0, 1, 0)
    buf = (ctypes.c_uint64 * 256)()
    n = libc.syscall(458, req, buf, 256, 0)
    return {"mounts": n, "errno": ctypes.get_errno()}
