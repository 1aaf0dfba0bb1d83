"""Take every thread the call may have and hold them a while."""
import threading
import time


def handler(event, context):
    stop = threading.Event()
    started = 0
    try:
        for _ in range(3000):
            threading.Thread(target=stop.wait, daemon=True).start()
            started += 1
    except RuntimeError:
        pass
    time.sleep(1.5)
    stop.set()
    return {"started": started}
