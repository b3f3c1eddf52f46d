"""A raw HTTP/2 client that posts a valid Stylize request and then never reads: it advertises a
zero receive window on its streams, so the server can send it no data at all.

Built on `h2` (no gRPC client library), so nothing reads on its behalf. `source` binds another
loopback address (127.0.0.2, ...), which the server sees as another peer.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from styletx_api.v1 import style_transfer_pb2 as pb

PATH = "/styletx.v1.StyleTransferService/Stylize"


def grpc_frame(message: pb.StylizeRequest) -> bytes:
    """One length-prefixed, uncompressed gRPC message."""
    data = message.SerializeToString()
    return b"\x00" + len(data).to_bytes(4, "big") + data


@dataclass
class StreamState:
    """What the server sent one stream: its headers, trailers and whether it was reset."""

    headers: dict[str, str] = field(default_factory=dict)
    trailers: dict[str, str] = field(default_factory=dict)
    data_bytes: int = 0
    reset: int | None = None


class ZeroWindowClient:
    """One HTTP/2 connection whose streams never open their receive window.

    `open_calls(request, n)` posts `n` Stylize calls on it; a background thread answers pings
    and settings (so the connection stays healthy) and records what arrives, but never sends a
    WINDOW_UPDATE (until `open_window(stream)`: the reader comes back). `reset(stream)` cancels
    one call; `close()` drops the connection.
    """

    def __init__(self, port: int, *, host: str = "127.0.0.1", source: str | None = None) -> None:
        self.sock = socket.create_connection(
            (host, port), timeout=10, source_address=(source, 0) if source else None
        )
        self.sock.settimeout(0.2)
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(config)
        self.conn.local_settings = h2.settings.Settings(
            client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0}
        )
        self._lock = threading.Lock()
        self.streams: dict[int, StreamState] = {}
        #: Request bytes not sent yet (the server's receive window is respected).
        self._pending: dict[int, bytes] = {}
        self.goaway = False
        self.closed = threading.Event()
        with self._lock:
            self.conn.initiate_connection()
            self.sock.sendall(self.conn.data_to_send())
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def open_calls(
        self, request: pb.StylizeRequest, count: int = 1, metadata: tuple[tuple[str, str], ...] = ()
    ) -> list[int]:
        """Post `count` calls of `request`; returns their stream ids."""
        body = grpc_frame(request)
        ids = []
        with self._lock:
            for _ in range(count):
                stream = self.conn.get_next_available_stream_id()
                self.conn.send_headers(
                    stream,
                    [
                        (":method", "POST"),
                        (":scheme", "http"),
                        (":path", PATH),
                        (":authority", "styletx"),
                        ("content-type", "application/grpc"),
                        ("te", "trailers"),
                        *metadata,
                    ],
                )
                self.streams[stream] = StreamState()
                self._pending[stream] = body
                ids.append(stream)
            self._pump()
            self.sock.sendall(self.conn.data_to_send())
        return ids

    def _pump(self) -> None:
        """Send what the server's flow-control windows allow of the pending requests."""
        for stream, body in list(self._pending.items()):
            window = min(
                self.conn.local_flow_control_window(stream), self.conn.max_outbound_frame_size
            )
            while body and window > 0:
                chunk, body = body[:window], body[window:]
                self.conn.send_data(stream, chunk, end_stream=not body)
                window = min(
                    self.conn.local_flow_control_window(stream), self.conn.max_outbound_frame_size
                )
            if body:
                self._pending[stream] = body
            else:
                del self._pending[stream]

    def _read(self) -> None:
        while not self.closed.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            with self._lock:
                try:
                    events = self.conn.receive_data(data)
                except h2.exceptions.ProtocolError:
                    # After GOAWAY h2 refuses further frames (pings): the bytes keep coming
                    # until the server closes the socket, which is what `wait_closed` sees.
                    continue
                for event in events:
                    self._record(event)
                if self._pending:
                    try:
                        self._pump()
                    except h2.exceptions.ProtocolError:  # the stream was closed meanwhile
                        self._pending.clear()
                with_reply = self.conn.data_to_send()
                if with_reply:
                    try:
                        self.sock.sendall(with_reply)
                    except OSError:
                        break
        self.closed.set()

    def _record(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = True
            return
        stream_id = getattr(event, "stream_id", None)
        state = self.streams.get(stream_id) if stream_id is not None else None
        if state is None:
            return
        if isinstance(event, h2.events.ResponseReceived):
            state.headers.update(dict(event.headers))  # type: ignore[arg-type]
        elif isinstance(event, h2.events.TrailersReceived):
            state.trailers.update(dict(event.headers))  # type: ignore[arg-type]
        elif isinstance(event, h2.events.DataReceived):
            state.data_bytes += len(event.data or b"")
        elif isinstance(event, h2.events.StreamReset):
            state.reset = int(event.error_code or 0)

    def status(self, stream: int) -> str | None:
        """The grpc-status the server sent `stream` (in its trailers or a trailers-only answer)."""
        with self._lock:
            state = self.streams[stream]
            return state.trailers.get("grpc-status") or state.headers.get("grpc-status")

    def open_window(self, stream: int, size: int = 1 << 30) -> None:
        """The reader comes back: open `stream`'s receive window (and the connection's) by
        `size` bytes, enough for anything the tests' calls send."""
        with self._lock:
            self.conn.increment_flow_control_window(size)
            self.conn.increment_flow_control_window(size, stream_id=stream)
            self.sock.sendall(self.conn.data_to_send())

    def reset(self, stream: int) -> None:
        """Cancel `stream` (RST_STREAM CANCEL), the connection kept open: what a proxy sends
        upstream when its own client leaves."""
        with self._lock:
            self._pending.pop(stream, None)
            self.conn.reset_stream(stream, h2.errors.ErrorCodes.CANCEL)
            self.sock.sendall(self.conn.data_to_send())

    def wait_closed(self, timeout: float) -> bool:
        """True once the server closed the connection (or it broke) within `timeout`."""
        return self.closed.wait(timeout)

    def close(self) -> None:
        self.closed.set()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._reader.join(5)


def wait(condition: object, timeout: float, interval: float = 0.05) -> bool:
    """Poll `condition()` until true or `timeout` passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():  # type: ignore[operator]
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
