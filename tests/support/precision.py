"""What `--precision auto` should resolve to on the machine running the tests."""

from __future__ import annotations

import os

from styletx.precision import cpu_bfloat16_flags


def auto_on_this_cpu() -> str:
    """The precision `auto` gives the default (non-reference) jobs of TensorFlow on this CPU:
    mixed_bfloat16 where the CPU has bfloat16 instructions and oneDNN is on, else float32."""
    onednn = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1").strip().lower() not in ("0", "false")
    return "mixed_bfloat16" if onednn and cpu_bfloat16_flags() else "float32"
