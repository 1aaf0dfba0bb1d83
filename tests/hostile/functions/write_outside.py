"""Write outside scratch: the data dir, a host temp dir, the package itself."""
import json
import os


def handler(event, context):
    ctx = json.loads(event)
    targets = [
        os.path.join(ctx["data_dir"], "evil"),
        os.path.join(ctx["data_dir"], "private", "node.key"),
        os.path.join(ctx["outside"], "evil"),
        "/orb-hostile-evil",  # the jail's root: read-only
        "/usr/orb-hostile-evil",  # the runtime: read-only
        __file__,
    ]
    escaped, denied = [], []
    for path in targets:
        try:
            with open(path, "a") as f:
                f.write("pwned")
            escaped.append(path)
        except OSError as e:  # EACCES, EROFS, or not even nameable (ENOENT)
            denied.append(str(e))
    try:
        os.unlink(os.path.join(ctx["data_dir"], "orb.sqlite"))
        escaped.append("unlink")
    except OSError as e:  # EACCES, EROFS, or not even nameable (ENOENT)
        denied.append(str(e))
    if escaped:
        return {"escaped": escaped}
    raise PermissionError("every write outside scratch was denied: " + "; ".join(denied))
