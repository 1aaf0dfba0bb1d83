"""Aim prlimit, scheduling or priority at another process (the peer)."""
import json
import os
import resource


def handler(event, context):
    ctx = json.loads(event)
    attack = ctx.get("attack", "prlimit")
    pid = ctx["peer_pid"]
    if attack == "prlimit":
        resource.prlimit(pid, resource.RLIMIT_CPU, (1, 1))
    elif attack == "sched":
        os.sched_setaffinity(pid, {0})
    elif attack == "nice":
        os.setpriority(os.PRIO_PROCESS, pid, 19)
    elif attack == "self":  # on itself it works
        resource.prlimit(0, resource.RLIMIT_NOFILE, (32, 32))
        os.setpriority(os.PRIO_PROCESS, 0, 5)
        return {"nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0]}
    return "not stopped"
