"""Reading ahead: a file's chunks cut in a thread while the caller encodes and decodes.

On a machine with cores to spare (an accelerator does the model's work), decoding the
audio and finding its speech need not wait for the model: they run ahead in a thread,
a bounded number of chunks ahead, so memory stays flat.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from queue import Full, Queue
from typing import TypeVar

T = TypeVar("T")
_END = object()


def ahead(items: Iterator[T], depth: int) -> Iterator[T]:
    """`items`, produced in a thread at most `depth` ahead of the caller; an error raised
    there is raised here, where its item would have come."""
    queue: Queue = Queue(depth)
    stop = threading.Event()

    def put(entry: tuple) -> bool:
        while not stop.is_set():
            try:
                queue.put(entry, timeout=0.1)
                return True
            except Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((_END, None))
        except BaseException as exc:  # handed to the caller, raised there
            put((_END, exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="audio-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item, error = queue.get()
            if item is _END:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()  # a producer waiting for room gives up within its put's timeout
        thread.join()
