"""Try to outlive the template: clear the parent-death signal."""
import ctypes


def handler(event, context):
    libc = ctypes.CDLL(None, use_errno=True)
    res = libc.prctl(1, 0, 0, 0, 0)  # PR_SET_PDEATHSIG
    return {"result": res, "errno": ctypes.get_errno()}
