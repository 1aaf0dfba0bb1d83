"""Attach to the parent (the zygote) with ptrace."""
import ctypes
import os

PTRACE_ATTACH = 16


def handler(event, context):
    libc = ctypes.CDLL(None, use_errno=True)
    res = libc.ptrace(PTRACE_ATTACH, os.getppid(), None, None)
    return {"ptrace": res, "errno": ctypes.get_errno()}
