"""A redis-server of the bench's own, for the benchmarks that run a fleet."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from bench.support.server_process import free_port


class Redis:
    """A redis-server of the bench's own on a free port (append-only file in a temp folder)."""

    def __init__(self, folder: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is needed (bash tools/system_tools.sh --redis)")
        self.port = free_port()
        config = f'port {self.port}\nbind 127.0.0.1\ndir "{folder}"\nappendonly yes\nsave ""\n'
        self.process = subprocess.Popen(
            [binary, "-"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, cwd=folder
        )
        assert self.process.stdin is not None
        self.process.stdin.write(config.encode())
        self.process.stdin.close()
        time.sleep(0.5)
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
