"""Start as many threads as it can (3000 asked)."""
import threading
import time


def handler(event, context):
    stop = threading.Event()
    started = 0
    try:
        for _ in range(3000):
            threading.Thread(target=stop.wait, daemon=True).start()
            started += 1
    except RuntimeError as e:
        error = str(e)
    else:
        error = ""
    stop.set()
    return {"started": started, "error": error}
