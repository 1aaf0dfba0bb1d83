"""Change host file metadata: modes, setuid, owner, times, then xattrs/ACLs."""
import json
import os


def handler(event, context):
    ctx = json.loads(event)
    targets = [ctx["key"], ctx["data_dir"], os.path.join(ctx["data_dir"], "bin", "tool"),
               "/usr/bin/env", "/pkg/host_metadata.py", "/dev/null", "/"]
    changed, refused = [], []
    for path in targets:
        for what, act in (("chmod 0777", lambda p: os.chmod(p, 0o777)),
                          ("setuid", lambda p: os.chmod(p, 0o4755)),
                          ("utime", lambda p: os.utime(p, (0, 0)))):
            try:
                act(path)
                changed.append(f"{what} {path}")
            except OSError as e:
                refused.append(f"{what} {path}: {e.strerror}")
    print("changed:", changed)
    print("refused:", len(refused))
    if changed:
        return {"changed": changed}
    # Last: an ACL as an xattr.  The syscall itself is not on the allowlist.
    os.setxattr(ctx["key"], "system.posix_acl_access", b"\x02\x00\x00\x00")
    return {"changed": ["xattr"]}
