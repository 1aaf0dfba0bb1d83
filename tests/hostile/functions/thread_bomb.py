"""Start threads until something gives."""
import threading
import time


def handler(event, context):
    n = 0
    while True:
        threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()
        n += 1
        if n % 10 == 0:
            print("threads:", n)
