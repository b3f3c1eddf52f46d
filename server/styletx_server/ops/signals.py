"""SIGTERM/SIGINT handling: the first signal starts a graceful drain, a second one hurries it."""

from __future__ import annotations

import signal
from collections.abc import Callable
from types import FrameType

SHUTDOWN_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)


def install_shutdown_handlers(
    on_first: Callable[[int], None], on_repeat: Callable[[int], None]
) -> Callable[[], None]:
    """Route shutdown signals to the callbacks (main thread only); returns a restore function.

    The callbacks run in the main thread between bytecodes, so they must only set flags.
    """
    received = 0

    def handle(signum: int, _frame: FrameType | None) -> None:
        nonlocal received
        received += 1
        (on_first if received == 1 else on_repeat)(signum)

    previous = {sig: signal.signal(sig, handle) for sig in SHUTDOWN_SIGNALS}

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore


__all__ = ["SHUTDOWN_SIGNALS", "install_shutdown_handlers"]
