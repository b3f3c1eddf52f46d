"""Shutdown signal routing: first signal drains, a second one hurries; handlers restore."""

from __future__ import annotations

import os
import signal

from styletx_server.ops.signals import install_shutdown_handlers


def test_first_and_repeated_signals_reach_their_callbacks() -> None:
    first: list[int] = []
    repeat: list[int] = []
    before = signal.getsignal(signal.SIGTERM)
    restore = install_shutdown_handlers(first.append, repeat.append)
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
    finally:
        restore()
    assert first == [signal.SIGTERM]
    assert repeat == [signal.SIGINT, signal.SIGTERM]
    assert signal.getsignal(signal.SIGTERM) == before
