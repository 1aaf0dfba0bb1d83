"""Fill the disk from scratch: one huge file, then many small ones."""
import os


def handler(event, context):
    chunk = b"z" * (1024 * 1024)
    errors = []
    try:
        with open("huge", "wb") as f:
            while True:
                f.write(chunk)
                f.flush()
    except OSError as e:
        errors.append(f"huge file: {e}")
    os.unlink("huge")
    try:
        for i in range(100000):
            with open(f"small-{i}", "wb") as f:
                f.write(chunk[:65536])
    except OSError as e:
        errors.append(f"small files: {e}")
    raise OSError("scratch is full: " + "; ".join(errors))
