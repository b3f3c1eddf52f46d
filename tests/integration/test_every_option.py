"""Every option of the proto, through the SDK, the server, both CLIs and into the engine.

Nothing here names an option: the values are derived from the proto's fields and the engine's
`StyleOptions` types, so a new option is exercised the day it is declared.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from styletx import StyleOptions
from styletx import cli as engine_cli
from styletx.engine import Stylizer
from styletx_api.schema import OPTION_FIELDS, OPTION_NAMES, enum_choices
from styletx_api.v1 import style_transfer_pb2 as pb
from styletx_client import StyleTransferClient
from styletx_client import cli as client_cli
from tests.integration.conftest import WAIT, ServerFactory
from tests.support.engines import WrappedEngine
from tests.support.weights import tiny_image

#: The options every test starts from: tiny and quick. The values under test differ from these.
BASE = StyleOptions(size=32, max_evaluations=4, seed=3)


def _choices(hint: Any) -> tuple[Any, ...]:
    return typing.get_args(hint) if typing.get_origin(hint) is typing.Literal else ()


def changed_value(name: str) -> Any:
    """A valid value of engine option `name` that differs from BASE's, derived from its type."""
    hint = typing.get_type_hints(StyleOptions)[name]
    current = getattr(BASE, name)
    if choices := _choices(hint):
        return next(c for c in choices if c != current)
    if typing.get_origin(hint) is tuple:
        return current[:-1] if len(current) > 1 else current
    kinds = [k for k in typing.get_args(hint) if k is not type(None)] or [hint]
    if kinds[0] is bool:
        return not current
    if kinds[0] is int:
        return (current or 0) + 1
    return round((current or 1.0) * 1.25, 4)


def expected_options() -> StyleOptions:
    """BASE with every option the proto offers changed."""
    return BASE.replace(**{name: changed_value(name) for name in OPTION_NAMES})


def sdk_kwargs() -> dict[str, Any]:
    expected = expected_options()
    return {name: _plain(getattr(expected, name)) for name in OPTION_NAMES}


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def cli_flags(options: StyleOptions, names: Sequence[str], list_style: str) -> list[str]:
    """`--name value` flags; lists as `a,b` (client CLI) or `a b` (engine CLI)."""
    flags: list[str] = []
    for name in names:
        value = getattr(options, name)
        flag = "--" + name.replace("_", "-")
        if isinstance(value, tuple):
            flags += [flag, ",".join(map(str, value))] if list_style == "comma" else [flag, *value]
        elif isinstance(value, bool):  # a switch: --name / --no-name
            flags += [flag if value else "--no-" + flag[2:]]
        else:
            flags += [flag, str(value)]
    return flags


class RecordingEngine(WrappedEngine):
    """The real engine, recording the options each job ran with."""

    def __init__(self, engine: Stylizer) -> None:
        super().__init__(engine)
        self.options: list[StyleOptions] = []

    def job_starting(self, options: StyleOptions | None) -> StyleOptions | None:
        assert options is not None
        self.options.append(options)
        return options


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[Path, Path]:
    content, style = tmp_path / "content.png", tmp_path / "style.png"
    Image.fromarray(tiny_image(48, 64, seed=1)).save(content)
    Image.fromarray(tiny_image(40, 40, seed=2)).save(style)
    return content, style


def test_every_proto_option_has_a_changed_value() -> None:
    expected = expected_options()
    for name in OPTION_NAMES:
        assert getattr(expected, name) != getattr(BASE, name), name


def test_every_option_reaches_the_engine_through_the_sdk_and_the_server(
    server_factory: ServerFactory, stylizer: Stylizer, inputs: tuple[Path, Path]
) -> None:
    engine = RecordingEngine(stylizer)
    server = server_factory(engine=engine)
    with StyleTransferClient(f"127.0.0.1:{server.port}", timeout=WAIT) as client:
        started = []
        result = client.stylize(
            inputs[0],
            inputs[1],
            on_event=started.append,
            **sdk_kwargs(),  # type: ignore[arg-type]
        )
    assert result.evaluations <= expected_options().max_evaluations
    assert engine.options == [expected_options()]
    reported = next(e for e in started if type(e).__name__ == "Started").options
    for name in OPTION_NAMES:
        assert _plain(getattr(reported, name)) == _plain(getattr(expected_options(), name)), name


def test_every_option_reaches_the_engine_through_the_client_cli(
    server_factory: ServerFactory, stylizer: Stylizer, inputs: tuple[Path, Path], tmp_path: Path
) -> None:
    engine = RecordingEngine(stylizer)
    server = server_factory(engine=engine)
    flags = cli_flags(expected_options(), OPTION_NAMES, "comma")
    code = client_cli.main(
        [
            "stylize",
            *map(str, inputs),
            "-o",
            str(tmp_path / "out.png"),
            "--server",
            f"127.0.0.1:{server.port}",
            "-q",
            *flags,
        ]
    )
    assert code == 0
    assert engine.options == [expected_options()]


def test_every_option_reaches_the_engine_through_the_engine_cli(
    seeded_weights: Path, inputs: tuple[Path, Path], tmp_path: Path
) -> None:
    engine_names = [f.name for f in dataclasses.fields(StyleOptions) if f.name in OPTION_NAMES]
    stats = tmp_path / "stats.json"
    code = engine_cli.main(
        [
            "stylize",
            *map(str, inputs),
            "-o",
            str(tmp_path / "out.png"),
            "--weights",
            str(seeded_weights),
            "--stats-json",
            str(stats),
            "--no-progress",
            *cli_flags(expected_options(), engine_names, "space"),
        ]
    )
    assert code == 0
    reported = json.loads(stats.read_text())["options"]
    ran = StyleOptions(**{k: tuple(v) if isinstance(v, list) else v for k, v in reported.items()})
    assert ran == expected_options()


def test_enum_options_offer_exactly_the_engine_choices() -> None:
    hints = typing.get_type_hints(StyleOptions)
    for field in OPTION_FIELDS:
        if field.enum_type is not None:
            assert set(enum_choices(field.enum_type)) == set(_choices(hints[field.name]))
    assert set(pb.StyleOptions.DESCRIPTOR.fields_by_name) <= set(hints)
