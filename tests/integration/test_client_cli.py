"""`styletx-client` against the scripted fake: outputs, flags, progress, exit codes, messages."""

from __future__ import annotations

import argparse
import subprocess
import sys
import uuid
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2
from PIL import Image

from styletx_api.v1 import style_transfer_pb2 as pb
from styletx_client import Progress, cli
from styletx_client._cli import stylize as stylize_command
from styletx_client._progress import ProgressReporter
from styletx_client.cli import main
from tests.support.fake_server import (
    Break,
    FakeJobs,
    FakeStyleTransfer,
    bad_request,
    closed_port_address,
    error_info,
    fail,
    png_bytes,
    progress,
    respond,
    result,
    retry_info,
    serve,
    slow,
    started,
)


@pytest.fixture
def images(tmp_path: Path) -> tuple[Path, Path]:
    content, style = tmp_path / "content.png", tmp_path / "style.jpg"
    content.write_bytes(png_bytes(12, 9, (10, 200, 10)))
    Image.new("RGB", (6, 6), (0, 0, 200)).save(style, format="JPEG")
    return content, style


def run(address: str, images: tuple[Path, Path], output: Path, *extra: str) -> int:
    content, style = images
    return main(
        ["stylize", str(content), str(style), "-o", str(output), "--server", address, *extra]
    )


def test_stylize_writes_the_result_and_shows_progress(
    images: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "out" / "result.png"
    with serve() as fake:
        assert run(fake.address, images, output) == 0
    assert Image.open(output).size == (8, 6)
    err = capsys.readouterr().err
    assert "queued (position 2)" in err
    assert "stylizing 8x6 (mixed_bfloat16)" in err  # with the precision the server resolved
    assert "iter 2" in err and "loss" in err and "content" in err and "tv" in err
    assert f"wrote {output}" in err


def test_quiet_hides_the_bar(
    images: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with serve() as fake:
        assert run(fake.address, images, tmp_path / "o.png", "-q") == 0
    err = capsys.readouterr().err
    assert "stylizing" not in err
    assert "wrote" in err


def test_every_flag_reaches_the_request(images: tuple[Path, Path], tmp_path: Path) -> None:
    content, style = images
    with serve() as fake:
        code = main(
            [
                "stylize", str(content), str(style), str(style), "-o", str(tmp_path / "o.jpg"),
                "--server", fake.address, "-q",
                "--size", "96", "--content-weight", "0.5", "--style-weight", "3",
                "--tv-weight", "0.25", "--tv-power", "1.5", "--content-layer", "block3_conv3",
                "--style-layers", "block1_conv2,block3_conv3", "--max-evaluations", "7",
                "--restart-every", "20", "--init", "content", "--seed", "11",
                "--style-scale", "0.5", "--preserve-colors", "swap", "--scales", "2",
                "--style-weights", "1,3", "--quality", "70", "--request-id", "cli-req",
            ]
        )  # fmt: skip
    assert code == 0
    call = fake.servicer.calls[0]
    o = call.request.options
    assert (o.size, o.content_weight, o.style_weight, o.tv_weight, o.tv_power) == (
        96,
        0.5,
        3.0,
        0.25,
        1.5,
    )
    assert o.content_layer == "block3_conv3"
    assert list(o.style_layers) == ["block1_conv2", "block3_conv3"]
    assert (o.max_evaluations, o.restart_every, o.seed, o.scales) == (7, 20, 11, 2)
    assert o.init == pb.INIT_METHOD_CONTENT
    assert o.style_scale == 0.5
    assert o.preserve_colors == pb.COLOR_PRESERVATION_SWAP
    assert [s.weight for s in call.request.style_images] == [1.0, 3.0]
    assert call.request.content_image == content.read_bytes()
    assert call.request.output_format == pb.IMAGE_FORMAT_JPEG  # from the .jpg suffix
    assert call.request.output_quality == 70
    assert call.metadata["x-request-id"] == "cli-req"


def test_every_style_option_of_the_proto_has_a_flag() -> None:
    commands = next(
        action
        for action in cli.build_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    stylize = commands.choices["stylize"]
    flags = {s for action in stylize._actions for s in action.option_strings}
    for field in pb.StyleOptions.DESCRIPTOR.fields:
        assert "--" + field.name.replace("_", "-") in flags


def test_unset_flags_leave_server_defaults(images: tuple[Path, Path], tmp_path: Path) -> None:
    with serve() as fake:
        assert run(fake.address, images, tmp_path / "o.png", "-q", "--preserve-colors", "off") == 0
    request = fake.servicer.calls[0].request
    assert not request.options.HasField("size")
    assert not request.options.HasField("max_evaluations")
    assert request.options.preserve_colors == pb.COLOR_PRESERVATION_OFF
    assert request.output_format == pb.IMAGE_FORMAT_PNG


def test_explicit_format_wins_over_the_suffix(images: tuple[Path, Path], tmp_path: Path) -> None:
    with serve() as fake:
        assert run(fake.address, images, tmp_path / "o.jpg", "-q", "--format", "webp") == 0
    assert fake.servicer.calls[0].request.output_format == pb.IMAGE_FORMAT_WEBP


def test_previews_are_written_to_the_folder(images: tuple[Path, Path], tmp_path: Path) -> None:
    preview = png_bytes(4, 3)
    fake = FakeStyleTransfer(
        respond(
            started(),
            progress(1, 2, preview=preview),
            progress(2, 3),
            progress(3, 4, preview=preview),
            result(),
        )
    )
    folder = tmp_path / "previews"
    with serve(fake) as server:
        assert run(server.address, images, tmp_path / "o.png", "-q", "--previews", str(folder)) == 0
    assert fake.calls[0].request.preview_every == 10
    assert sorted(p.name for p in folder.iterdir()) == ["preview_0001.png", "preview_0003.png"]
    assert (folder / "preview_0001.png").read_bytes() == preview


def test_side_by_side_strip(images: tuple[Path, Path], tmp_path: Path) -> None:
    strip = tmp_path / "side.png"
    fake = FakeStyleTransfer(respond(started(), result(png_bytes(16, 12), 16, 12)))
    with serve(fake) as server:
        code = run(server.address, images, tmp_path / "o.png", "-q", "--side-by-side", str(strip))
    assert code == 0
    # content 12x9 -> 16x12, style 6x6 -> 12x12, result 16x12.
    assert Image.open(strip).size == (16 + 12 + 16, 12)


def test_side_by_side_without_pillow_fails_before_calling(
    images: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(stylize_command, "pillow_available", lambda: False)
    with serve() as fake:
        code = run(fake.address, images, tmp_path / "o.png", "--side-by-side", "s.png")
    assert code == 2
    assert "pip install 'styletx-client[pil]'" in capsys.readouterr().err
    assert fake.servicer.calls == []


def test_invalid_argument_exits_2_and_lists_the_violations(
    images: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeStyleTransfer(
        fail(
            grpc.StatusCode.INVALID_ARGUMENT,
            "invalid request",
            bad_request(("options.size", "must be at most 1024"), ("style_images[0]", "empty")),
            request_id="srv-42",
        )
    )
    with serve(fake) as server:
        assert run(server.address, images, tmp_path / "o.png", "--size", "5000") == 2
    err = capsys.readouterr().err
    assert "options.size: must be at most 1024" in err
    assert "style_images[0]: empty" in err
    assert "srv-42" in err


def test_unreachable_server_exits_3(
    images: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    address = closed_port_address()
    assert run(address, images, tmp_path / "o.png", "--max-attempts", "1") == 3
    err = capsys.readouterr().err
    assert f"cannot reach a styletx server at {address}" in err
    assert "STYLETX_SERVER" in err


def test_busy_server_exits_3_with_the_retry_hint(
    images: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeStyleTransfer(fail(grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full", retry_info(7)))
    with serve(fake) as server:
        assert run(server.address, images, tmp_path / "o.png", "--max-attempts", "1") == 3
    assert "busy" in (err := capsys.readouterr().err) and "retry in 7s" in err


def test_deadline_exits_4(
    images: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeStyleTransfer(slow())
    with serve(fake) as server:
        assert run(server.address, images, tmp_path / "o.png", "-q", "--timeout", "0.3") == 4
    assert "raise --timeout" in capsys.readouterr().err


def test_auth_exits_5_and_the_token_comes_from_flag_or_env(
    images: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with serve(token="s3cret") as fake:
        assert run(fake.address, images, tmp_path / "o.png", "-q") == 5
        assert "STYLETX_TOKEN" in capsys.readouterr().err
        assert run(fake.address, images, tmp_path / "o.png", "-q", "--token", "s3cret") == 0
        monkeypatch.setenv("STYLETX_TOKEN", "s3cret")
        assert run(fake.address, images, tmp_path / "o.png", "-q") == 0


def test_server_from_env(
    images: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    content, style = images
    with serve() as fake:
        monkeypatch.setenv("STYLETX_SERVER", fake.address)
        assert main(["stylize", str(content), str(style), "-o", str(tmp_path / "o.png"), "-q"]) == 0
    assert len(fake.servicer.calls) == 1


def test_other_failures_exit_1(
    images: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeStyleTransfer(fail(grpc.StatusCode.INTERNAL, "engine exploded"))
    with serve(fake) as server:
        assert run(server.address, images, tmp_path / "o.png", "-q") == 1
    assert "INTERNAL: engine exploded" in capsys.readouterr().err


def test_unwritable_output_exits_1(
    images: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "taken"
    directory.mkdir()
    with serve() as fake:
        assert run(fake.address, images, directory, "-q") == 1
    assert "cannot write" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--style-weights", "1,2"], "--style-weights has 2 value(s) for 1 style image(s)"),
        (["--preview-every", "5"], "--preview-every needs --previews"),
        (["--size", "-3"], "size: Value out of range"),
        (["--max-attempts", "0"], "--max-attempts"),
    ],
)
def test_local_usage_errors_exit_2_without_calling(
    images: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    with serve() as fake:
        assert run(fake.address, images, tmp_path / "o.png", *args) == 2
    assert message in capsys.readouterr().err
    assert fake.servicer.calls == []


def test_missing_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.jpg"
    code = main(["stylize", str(missing), str(missing), "-o", str(tmp_path / "o.png")])
    assert code == 2
    assert f"cannot read content image '{missing}'" in capsys.readouterr().err


def test_bad_server_target_exits_2(
    images: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("host-a:1,host-b:2", images, tmp_path / "o.png") == 2
    assert "dns:///" in capsys.readouterr().err


def test_health_command(capsys: pytest.CaptureFixture[str]) -> None:
    with serve() as fake:
        assert main(["health", "--server", fake.address]) == 0
        assert capsys.readouterr().out == "SERVING\n"
        fake.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        assert main(["health", "--server", fake.address]) == 3
        captured = capsys.readouterr()
        assert captured.out == "NOT_SERVING\n"
        assert "not serving" in captured.err
        assert main(["health", "--server", fake.address, "--service", "x.Y"]) == 2
    assert main(["health", "--server", closed_port_address()]) == 3


def test_console_script_exit_code_reaches_the_shell() -> None:
    script = Path(sys.executable).parent / "styletx-client"
    completed = subprocess.run(
        [str(script), "health", "--server", closed_port_address(), "--timeout", "5"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 3
    assert "cannot reach a styletx server" in completed.stderr


def test_usage_error_from_argparse_exits_2() -> None:
    with pytest.raises(SystemExit) as info:
        main(["stylize", "only-content.png"])
    assert info.value.code == 2


def test_ctrl_c_cancels_the_call_and_exits_130(
    images: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def interrupt_on_progress(self: object, event: object) -> None:
        if isinstance(event, Progress):
            raise KeyboardInterrupt

    monkeypatch.setattr(ProgressReporter, "__call__", interrupt_on_progress)
    fake = FakeStyleTransfer(slow())
    with serve(fake) as server:
        assert run(server.address, images, tmp_path / "o.png", "-q") == 130
        assert fake.calls[0].cancelled.wait(10)
    assert "interrupted" in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()


def test_request_key_is_sent_and_a_random_one_by_default(
    images: tuple[Path, Path], tmp_path: Path
) -> None:
    with serve() as fake:
        assert run(fake.address, images, tmp_path / "a.png", "-q", "--request-key", "k-1") == 0
        assert run(fake.address, images, tmp_path / "b.png", "-q") == 0
    keys = [c.request.request_key for c in fake.servicer.calls]
    assert keys[0] == "k-1"
    assert uuid.UUID(keys[1]).version == 4


def test_out_of_memory_exits_6_without_retrying(
    images: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeStyleTransfer(
        fail(grpc.StatusCode.RESOURCE_EXHAUSTED, "out of memory", error_info("OUT_OF_MEMORY"))
    )
    with serve(fake) as server:
        assert run(server.address, images, tmp_path / "o.png", "-q") == cli.EXIT_OUT_OF_MEMORY == 6
    err = capsys.readouterr().err
    assert "ran out of memory" in err and "--size" in err and "will not help" in err
    assert len(fake.calls) == 1
    assert "6 the server ran out of memory" in " ".join((cli.__doc__ or "").split())


def test_a_reused_key_exits_2_and_says_so(
    images: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeStyleTransfer(
        fail(grpc.StatusCode.ALREADY_EXISTS, "key bound elsewhere", error_info("KEY_REUSED"))
    )
    with serve(fake) as server:
        code = run(server.address, images, tmp_path / "o.png", "-q", "--request-key", "k-9")
    assert code == 2
    assert "request key k-9 already belongs to a different request" in capsys.readouterr().err


def test_a_broken_job_names_the_key_to_re_attach_with(
    images: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs = FakeJobs(breaks=[Break(after=4)])
    output = tmp_path / "o.png"
    with serve(jobs) as server:
        args = ("-q", "--max-attempts", "1", "--request-key", "k-2")
        assert run(server.address, images, output, *args) == 3
        assert "re-run with --request-key k-2 to attach" in capsys.readouterr().err
        assert run(server.address, images, output, "-q", "--request-key", "k-2") == 0
    assert jobs.computations == 1
    assert output.exists()
