"""The SDK and its CLI never import TensorFlow, numpy, scipy, or (unless asked) Pillow."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import contextlib, io, json, sys
import styletx_client
from styletx_client import cli
with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
    cli.main(["--help"])
with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
    cli.main(["stylize", "--help"])
print(json.dumps(sorted(sys.modules)))
"""

FORBIDDEN = ("tensorflow", "keras", "numpy", "scipy", "PIL", "styletx", "styletx_server")


def test_importing_the_sdk_and_running_cli_help_loads_no_ml_stack() -> None:
    completed = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=True
    )
    loaded = {name.split(".")[0] for name in json.loads(completed.stdout)}
    assert "styletx_client" in loaded
    assert "grpc" in loaded
    assert sorted(loaded.intersection(FORBIDDEN)) == []
