"""Answer at once, but leave a thread burning CPU after the answer."""
import threading
import time

STARTED = []


def burn():
    while True:
        pass


def handler(event, context):
    if event == b"start":
        if not STARTED:
            threading.Thread(target=burn, daemon=True).start()
            STARTED.append(time.process_time())
        return {"cpu_s": time.process_time()}
    return {"cpu_s": time.process_time()}
