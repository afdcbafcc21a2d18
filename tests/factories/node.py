"""A DICOM node serving on a free loopback port for the length of a test."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from mura.pacs.node import DicomNode


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serving(node: DicomNode) -> Iterator[DicomNode]:
    """`node.serve()` on a thread until the block ends; the node is listening when the block starts."""
    ready = threading.Event()
    thread = threading.Thread(target=lambda: node.serve(ready.set), daemon=True)
    thread.start()
    assert ready.wait(30), "the node did not start listening within 30 s"
    try:
        yield node
    finally:
        node.stop.set()
        thread.join(30)
