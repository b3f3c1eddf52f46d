"""The SDK and CLI against real `styletx-server` processes (seeded weights, tiny images)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from styletx_client import (
    InvalidRequestError,
    Progress,
    Result,
    Started,
    StyleTransferClient,
)
from styletx_client.cli import main as cli_main
from tests.support.server_process import ServerProcess, launch, png, wait_ready

TINY = {"size": 32, "max_evaluations": 8}  # enough for a few L-BFGS iterations


@pytest.fixture(scope="module")
def real_server(seeded_weights: Path) -> Iterator[ServerProcess]:
    server = launch(seeded_weights)
    try:
        wait_ready([server])
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def image_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("images")
    content, style = folder / "content.png", folder / "style.png"
    content.write_bytes(png(48, 36, 1))
    style.write_bytes(png(32, 32, 2))
    return content, style


def test_sdk_stylizes_through_the_real_server(
    real_server: ServerProcess, image_files: tuple[Path, Path]
) -> None:
    content, style = image_files
    events: list[object] = []
    with StyleTransferClient(real_server.address, timeout=120) as client:
        out = client.stylize(content, style, on_event=events.append, seed=3, **TINY)  # type: ignore[arg-type]
    assert isinstance(out, Result)
    assert max(out.width, out.height) == 32
    assert Image.open(io.BytesIO(out.image_bytes)).size == (out.width, out.height)
    started = [e for e in events if isinstance(e, Started)]
    assert len(started) == 1
    assert started[0].options.max_evaluations == 8
    assert started[0].options.seed == 3
    assert any(isinstance(e, Progress) for e in events)


def test_real_validation_errors_carry_field_violations(
    real_server: ServerProcess, image_files: tuple[Path, Path]
) -> None:
    content, style = image_files
    with (
        StyleTransferClient(real_server.address) as client,
        pytest.raises(InvalidRequestError) as info,
    ):
        client.stylize(content, style, size=100_000, max_evaluations=3)
    assert any("size" in v.field for v in info.value.field_violations)
    assert info.value.request_id


def test_cli_against_the_real_server(
    real_server: ServerProcess, image_files: tuple[Path, Path], tmp_path: Path
) -> None:
    content, style = image_files
    output, strip, previews = tmp_path / "r.png", tmp_path / "sbs.png", tmp_path / "previews"
    code = cli_main(
        [
            "stylize", str(content), str(style), "-o", str(output), "--server",
            real_server.address, "--size", "32", "--max-evaluations", "8", "--preview-every",
            "1", "--previews", str(previews), "--side-by-side", str(strip), "-q",
        ]
    )  # fmt: skip
    assert code == 0
    result = Image.open(output)
    assert max(result.size) == 32
    assert Image.open(strip).height == result.height
    assert any(previews.iterdir())
    assert cli_main(["health", "--server", real_server.address]) == 0
