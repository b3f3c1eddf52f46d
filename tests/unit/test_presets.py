"""Presets: valid option sets, overridable, `reference` = the tutorial's defaults."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from styletx.errors import InvalidOptions
from styletx.options import StyleOptions
from styletx.presets import PRESET_FIELDS, PRESET_VALUES, PRESETS, preset_values


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_resolves_to_valid_options_carrying_its_values(name: str) -> None:
    options = StyleOptions.from_preset(name)
    assert options.preset == name
    assert set(PRESET_VALUES) == set(PRESETS)
    for key, value in PRESET_VALUES[name].items():
        assert getattr(options, key) == value, key
    # The resolved options survive a round trip through the validating constructor.
    assert StyleOptions(**dict(vars(options))) == options


@pytest.mark.parametrize("name", PRESETS)
def test_naming_a_preset_in_the_constructor_applies_it(name: str) -> None:
    assert StyleOptions(preset=name) == StyleOptions.from_preset(name)
    assert StyleOptions(preset=name, size=64) == StyleOptions.from_preset(name, size=64)
    for key, value in PRESET_VALUES[name].items():
        assert getattr(StyleOptions(preset=name), key) == value, key


def test_a_field_the_constructor_names_wins_over_the_preset_even_at_its_default() -> None:
    default = StyleOptions().max_evaluations
    options = StyleOptions(preset="fast", max_evaluations=default)
    assert options.max_evaluations == default
    assert (options.init, options.pixel_bounds) == ("content_matched", True)


def test_copies_and_replace_keep_every_field() -> None:
    fast = StyleOptions(preset="fast", max_evaluations=7)
    assert dataclasses.replace(fast, size=64) == StyleOptions.from_preset(
        "fast", max_evaluations=7, size=64
    )
    reference_values = dataclasses.replace(fast, init="random", pixel_bounds=False)
    assert (reference_values.init, reference_values.pixel_bounds) == ("random", False)
    assert copy.deepcopy(fast) == fast and pickle.loads(pickle.dumps(fast)) == fast
    assert set(vars(copy.copy(fast))) == {f.name for f in dataclasses.fields(fast)}


@pytest.mark.parametrize("start", PRESETS)
@pytest.mark.parametrize("name", PRESETS)
def test_replace_switches_to_the_named_preset_from_any_other(start: str, name: str) -> None:
    options = StyleOptions.from_preset(start, size=64, seed=5)
    assert options.replace(preset=name) == StyleOptions.from_preset(name, size=64, seed=5)


def test_preset_fields_are_every_option_a_preset_decides() -> None:
    assert {key for values in PRESET_VALUES.values() for key in values} == PRESET_FIELDS
    assert PRESET_FIELDS  # the presets differ from the reference somewhere


def test_switching_presets_drops_values_the_old_one_decided_unless_named_again() -> None:
    tuned = StyleOptions(preset="fast", max_evaluations=7, size=64)
    assert tuned.replace(preset="high").max_evaluations == 500
    assert tuned.replace(preset="high", max_evaluations=7) == StyleOptions.from_preset(
        "high", max_evaluations=7, size=64
    )


def test_naming_the_options_own_preset_again_changes_nothing() -> None:
    tuned = StyleOptions(preset="fast", max_evaluations=7)
    assert tuned.replace(preset="fast") == tuned
    assert StyleOptions(max_evaluations=7).replace(preset="reference").max_evaluations == 7


@pytest.mark.parametrize("name", PRESETS)
def test_replace_resolves_a_preset_as_the_server_does(name: str) -> None:
    # The server's resolution (styletx_server's intake): its defaults, with an operator's
    # --default-size and --default-evaluations, then the preset's values.
    defaults = StyleOptions(size=64, max_evaluations=90)
    server = dataclasses.replace(defaults, **preset_values(name), preset=name)
    assert defaults.replace(preset=name) == server
    assert defaults.replace(**preset_values(name), preset=name) == server


def test_replace_refuses_an_unknown_preset_naming_the_field() -> None:
    with pytest.raises(InvalidOptions) as info:
        StyleOptions().replace(preset="best")
    assert info.value.field == "preset"


def test_reference_is_the_tutorials_defaults() -> None:
    assert preset_values("reference") == {}
    assert StyleOptions.from_preset("reference") == StyleOptions()
    assert StyleOptions.from_preset() == StyleOptions()


@pytest.mark.parametrize("name", ["fast", "high"])
def test_presets_change_something_and_order_by_budget(name: str) -> None:
    values = preset_values(name)
    assert values, f"{name} would be the reference preset under another name"
    budget = StyleOptions.from_preset(name).max_evaluations
    default = StyleOptions().max_evaluations
    assert budget < default if name == "fast" else budget > default


def _other_value(key: str, value: Any) -> Any:
    """A valid value different from `value` for option `key`."""
    others = {
        "init": "style" if value != "style" else "random",
        "scales": 1 if value != 1 else 2,
        "max_evaluations": value + 7 if isinstance(value, int) else 7,
        "content_layer": "block4_conv2" if value != "block4_conv2" else "block3_conv1",
        "style_layers": ("block1_conv1",),
        "lbfgs_memory": 3 if value != 3 else 4,
    }
    if key in others:
        return others[key]
    if isinstance(value, bool):
        return not value
    assert isinstance(value, float), f"add a case for {key}"
    return value * 2 + 0.5


@pytest.mark.parametrize("name", ["fast", "high"])
def test_explicit_options_override_every_preset_value(name: str) -> None:
    values = preset_values(name)
    overrides = {key: _other_value(key, value) for key, value in values.items()}
    options = StyleOptions.from_preset(name, **overrides, size=64)
    for key, value in overrides.items():
        assert getattr(options, key) == value, key
    assert (options.size, options.preset) == (64, name)
    # One override leaves the preset's other values in place.
    first, *rest = values
    single = StyleOptions.from_preset(name, **{first: overrides[first]})
    assert getattr(single, first) == overrides[first]
    assert all(getattr(single, key) == values[key] for key in rest)


def test_an_unknown_preset_is_refused_naming_the_field() -> None:
    with pytest.raises(InvalidOptions) as info:
        StyleOptions.from_preset("best")
    assert info.value.field == "preset"
    with pytest.raises(InvalidOptions):
        preset_values("best")


def test_preset_values_are_read_only() -> None:
    with pytest.raises(TypeError):
        PRESET_VALUES["fast"]["max_evaluations"] = 1  # type: ignore[index]
    preset_values("fast")["max_evaluations"] = 1  # a copy: the preset itself is unchanged
    assert preset_values("fast") == dict(PRESET_VALUES["fast"])


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_runs_on_the_engine_within_an_overridden_budget(
    name: str, seeded_weights: Path, content_image: np.ndarray, style_image: np.ndarray
) -> None:
    from styletx.engine import Stylizer

    options = StyleOptions.from_preset(name, size=64, max_evaluations=8, seed=0)
    result = Stylizer(seeded_weights).stylize(content_image, [style_image], options)
    assert result.image.shape == (48, 64, 3)
    assert 1 <= result.evaluations <= 8
    assert np.isfinite(result.losses.total)
