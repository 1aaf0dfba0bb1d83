"""Watch a host directory it cannot list, with inotify."""
import ctypes
import json


def handler(event, context):
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(0)
    wd = libc.inotify_add_watch(fd, json.loads(event)["data_dir"].encode(), 0xFFF)
    return {"fd": fd, "wd": wd}
