"""Escape scratch through symlinks, hard links and .. paths."""
import json
import os


def handler(event, context):
    ctx = json.loads(event)
    escaped, denied = [], []

    def attempt(name, fn):
        try:
            fn()
            escaped.append(name)
        except OSError as e:
            denied.append(f"{name}: {e}")

    os.symlink(ctx["key"], "key-link")
    os.symlink(ctx["data_dir"], "data-link")
    attempt("read key via symlink", lambda: open("key-link", "rb").read())
    attempt("write via dir symlink", lambda: open("data-link/evil", "w").write("x"))
    attempt("hard link the key", lambda: os.link(ctx["key"], "key-hard"))
    attempt("rename key into scratch", lambda: os.rename(ctx["key"], "stolen"))
    up = os.path.relpath(ctx["key"], os.getcwd())
    attempt("read key via ..", lambda: open(up, "rb").read())
    attempt("write via ..", lambda: open(os.path.join("..", "..", "evil"), "w").write("x"))
    if escaped:
        return {"escaped": escaped}
    raise PermissionError("every escape from scratch was denied: " + "; ".join(denied))
