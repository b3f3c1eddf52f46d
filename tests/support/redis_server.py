"""A real Redis for tests: Debian's `redis-server` on a free port in a temporary folder.

`RedisServer` starts one (append-only file on, no RDB snapshots, a random password, bound to
127.0.0.1), waits until it answers PING and stops it on `stop()`. `find_redis_server` finds the
binary, installing Debian's `redis-server` first through tools/system_tools.sh when it is
missing and that can be done (root with apt-get); None means it cannot be had here.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[2]
SYSTEM_TOOLS = ROOT / "tools" / "system_tools.sh"
START_TIMEOUT = 15.0
#: What a test says when it is skipped for want of a server.
MISSING = (
    "redis-server is not installed and could not be (needs root and apt-get: "
    "`bash tools/system_tools.sh --redis`, or `apt-get install redis-server`)"
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_redis_server(lock_dir: Path) -> str | None:
    """The `redis-server` binary, installed first when missing and installable; else None.
    Concurrent test processes install it once (a lock file in `lock_dir`)."""
    found = shutil.which("redis-server")
    if found or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return found
    lock_dir.mkdir(parents=True, exist_ok=True)
    with (lock_dir / "redis-install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if shutil.which("redis-server") is None:
            subprocess.run(
                ["bash", str(SYSTEM_TOOLS), "--redis"],
                check=False,
                stdin=subprocess.DEVNULL,
                timeout=600,
            )
    return shutil.which("redis-server")


class RedisServer:
    """One `redis-server` process of our own (never the system's service on 6379)."""

    def __init__(
        self, binary: str, folder: Path, *, port: int | None = None, password: str | None = None
    ) -> None:
        """Start one in `folder` (a restart when it holds an earlier one's append-only file and
        `port` and `password` are that one's)."""
        self.binary = binary
        self.folder = folder
        self.password = password or secrets.token_urlsafe(16)
        self.log = folder / "redis.log"
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        for _ in range(1 if port else 5):  # a port taken since free_port(): try another
            self.port = port or free_port()
            self.process = subprocess.Popen(
                [binary, "-"],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
                cwd=folder,
            )
            assert self.process.stdin is not None
            self.process.stdin.write(self._config().encode())
            self.process.stdin.close()
            if self._wait_ready():
                return
            self.stop()
        raise RuntimeError(f"redis-server did not start; its log:\n{self._log_tail()}")

    def _config(self) -> str:
        return "\n".join(
            [
                f"port {self.port}",
                "bind 127.0.0.1",
                f'dir "{self.folder}"',
                f'logfile "{self.log}"',
                "appendonly yes",
                'save ""',
                f"requirepass {self.password}",
                "daemonize no",
                "",
            ]
        )

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                return False
            try:
                if self.client().ping():
                    return True
            except redis.RedisError:
                pass
            time.sleep(0.05)
        return False

    def client(self) -> redis.Redis:
        """A synchronous client on database 0 (for checks and cleaning)."""
        return redis.Redis(port=self.port, password=self.password, socket_timeout=5)

    def url(self, db: int = 0, **query: str) -> str:
        """The store URL of this server (with its password)."""
        tail = "&".join(f"{k}={v}" for k, v in query.items())
        return f"redis://:{self.password}@127.0.0.1:{self.port}/{db}" + (f"?{tail}" if tail else "")

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


__all__ = ["MISSING", "RedisServer", "find_redis_server", "free_port"]
