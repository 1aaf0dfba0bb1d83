"""A very deep and a very wide tree in scratch."""
import os


def handler(event, context):
    depth = 0
    os.chdir("/tmp")
    try:
        for _ in range(100000):
            os.mkdir("d")
            os.chdir("d")
            depth += 1
    except OSError as e:
        deep_err = e.strerror
    os.chdir("/tmp")
    wide = 0
    try:
        for i in range(100000):
            with open(f"/tmp/f{i}", "w"):
                pass
            wide += 1
    except OSError as e:
        wide_err = e.strerror
    return {"depth": depth, "deep_error": deep_err, "wide": wide, "wide_error": wide_err}
