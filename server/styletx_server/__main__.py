"""`styletx-server` / `python -m styletx_server`: run the service until SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence

from styletx import backends, startup
from styletx.errors import BackendUnavailable
from styletx_server.observe.logs import configure_logging, log_event
from styletx_server.observe.tracing import TracingConfigError, configure
from styletx_server.ops.config import ServerConfig, load_config
from styletx_server.ops.signals import install_shutdown_handlers

log = logging.getLogger("styletx_server")

#: How often the main thread checks whether the model failed to load.
_POLL_SECONDS = 0.5


def select_backend(config: ServerConfig) -> str | None:
    """Fix the Keras backend (--backend, else $KERAS_BACKEND, else tensorflow) before anything
    imports Keras; None (after logging why) when it is unknown or not installed."""
    name = config.backend or os.environ.get("KERAS_BACKEND") or backends.DEFAULT
    try:
        return backends.select(name)
    except BackendUnavailable as exc:
        log_event(log, "backend_unavailable", level=logging.ERROR, backend=name, error=str(exc))
        sys.stderr.write(f"styletx-server: error: --backend {name}: {exc}\n")
        return None


def main(argv: Sequence[str] | None = None) -> int:
    """Serve; exit 0 after a graceful drain, 1 when the model or the port is unusable, 2 on a
    bad flag or a backend that is not installed."""
    config = load_config(argv)
    configure_logging(config.log_level)
    backend = select_backend(config)
    if backend is None:
        return 2
    try:
        tracer_provider = configure()  # None unless the OTEL_* environment asks for traces
    except TracingConfigError as exc:
        sys.stderr.write(f"styletx-server: error: {exc}\n")
        return 2
    try:
        # Before anything else imports the framework, so its start-up notices become JSON log
        # lines instead of raw text on stderr.
        startup.load_framework(backend)
    except Exception as exc:
        log_event(log, "start_failed", level=logging.ERROR, exc_info=exc, error=str(exc))
        return 1
    # Imported after logging is set up and the backend chosen: importing the engine loads the
    # framework (slow, chatty), and Keras takes its backend at its first import.
    from styletx_server.ops.app import StyletxServer
    from styletx_server.ops.grpc_server import LoopThread

    server = StyletxServer(config, tracer_provider=tracer_provider)
    stop = threading.Event()
    received: list[int] = []

    def first(signum: int) -> None:
        received.append(signum)
        stop.set()

    def again(signum: int) -> None:
        # Runs between bytecodes of the main thread, possibly inside drain(): only set flags.
        server.lifecycle.shutting_down.set()

    restore = install_shutdown_handlers(first, again)
    try:
        try:
            server.start()
        except Exception as exc:
            log_event(log, "start_failed", level=logging.ERROR, exc_info=exc, error=str(exc))
            server.stop()
            return 1
        while not stop.wait(_POLL_SECONDS):
            if server.failure is not None:
                server.stop()
                return 1
        log_event(log, "shutdown_signal", signal=signal.Signals(received[0]).name)
        server.drain()
        server.stop()
        return 0
    finally:
        LoopThread.stop()
        restore()


if __name__ == "__main__":
    sys.exit(main())
