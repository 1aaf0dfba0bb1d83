"""Make a new user namespace to regain capabilities."""
import ctypes

CLONE_NEWUSER = 0x10000000


def handler(event, context):
    libc = ctypes.CDLL(None, use_errno=True)
    return {"unshare": libc.unshare(CLONE_NEWUSER), "errno": ctypes.get_errno()}
