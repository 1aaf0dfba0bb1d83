#!/usr/bin/python3
"""An exec program that installs its own SIGSYS handler, then calls mount(2)."""
import ctypes
import signal
import sys

signal.signal(signal.SIGSYS, lambda *a: None)
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall(165, b"none", b"/tmp", b"tmpfs", 0, None)
sys.stdout.write("survived a forbidden syscall")
