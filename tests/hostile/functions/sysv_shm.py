"""SysV shared memory beyond the memory limit, left for the next tenant (shmget nr 29)."""
import ctypes


def handler(event, context):
    libc = ctypes.CDLL(None, use_errno=True)
    ids = [libc.syscall(29, 0x0B0B0000 + i, 512 << 20, 0o1666) for i in range(8)]
    return {"shm_ids": ids}
