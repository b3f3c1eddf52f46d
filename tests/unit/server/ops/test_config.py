"""Server configuration: defaults, STYLETX_* variables, flag precedence, validation, --help,
and what derives from the one declaration of each setting (the README's table included)."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from styletx_server.ops.config import (
    SETTINGS,
    ServerConfig,
    build_parser,
    env_name,
    limits_of,
    load_config,
)
from styletx_server.ops.settings_schema import Setting, markdown_table, splice

ROOT = Path(__file__).resolve().parents[4]


def test_defaults_match_the_contract() -> None:
    config = load_config([], env={})
    assert config == ServerConfig()
    assert config.address == "[::]:50051"
    assert config.metrics_port == 9090
    assert config.workers == 0
    assert config.queue_size == 16
    assert config.max_message_bytes == 32 * 1024 * 1024
    assert config.max_pixels == 40_000_000
    # No restated engine defaults: unset means the engine's own.
    assert (config.default_evaluations, config.max_evaluations) == (None, 1000)
    assert (config.default_size, config.max_size) == (None, 1024)
    assert config.default_preset == "reference"
    assert config.grace_period == 60
    assert config.warmup is True
    assert config.weights is None and config.auth_token is None
    assert (config.max_styles, config.max_style_size, config.max_scales) == (8, 1024, 4)
    assert config.max_request_pixels <= config.max_inflight_pixels
    assert config.require_gpu is False and config.tls_client_ca is None
    # Readers that never read, one caller's share, the connection-age grace.
    assert (config.stall_timeout, config.max_peer_share) == (5.0, 0.25)
    assert config.max_connection_age_grace == 600.0


def test_environment_variables_set_every_option() -> None:
    env = {
        "STYLETX_ADDRESS": "127.0.0.1:6000",
        "STYLETX_METRICS_PORT": "0",
        "STYLETX_WEIGHTS": "/w/vgg.weights.h5",
        "STYLETX_WORKERS": "2",
        "STYLETX_QUEUE_SIZE": "3",
        "STYLETX_MAX_MESSAGE_BYTES": "2048",
        "STYLETX_MAX_PIXELS": "1000",
        "STYLETX_DEFAULT_EVALUATIONS": "10",
        "STYLETX_MAX_EVALUATIONS": "20",
        "STYLETX_DEFAULT_SIZE": "64",
        "STYLETX_MAX_SIZE": "128",
        "STYLETX_GRACE_PERIOD": "2.5",
        "STYLETX_TLS_CERT": "/tls/cert.pem",
        "STYLETX_TLS_KEY": "/tls/key.pem",
        "STYLETX_AUTH_TOKEN": "tok",
        "STYLETX_LOG_LEVEL": "debug",
        "STYLETX_NO_WARMUP": "true",
        "STYLETX_MAX_REQUEST_PIXELS": "900",
        "STYLETX_MAX_INFLIGHT_PIXELS": "5000",
        "STYLETX_MAX_STYLES": "3",
        "STYLETX_MAX_CALLS": "9",
        "STYLETX_DECODE_THREADS": "4",
        "STYLETX_MAX_STYLE_SIZE": "256",
        "STYLETX_MAX_SCALES": "2",
        "STYLETX_LINGER": "7.5",
        "STYLETX_RESULT_TTL": "60",
        "STYLETX_MAX_STORED_RESULTS": "5",
        "STYLETX_MAX_STORED_RESULT_BYTES": "4096",
        "STYLETX_TLS_CLIENT_CA": "/tls/ca.pem",
        "STYLETX_REQUIRE_GPU": "1",
        "STYLETX_STALL_TIMEOUT": "2.5",
        "STYLETX_MAX_PEER_SHARE": "0.5",
        "STYLETX_MAX_CONNECTION_AGE_GRACE": "90",
    }
    config = load_config([], env=env)
    assert config == ServerConfig(
        address="127.0.0.1:6000",
        metrics_port=0,
        weights=Path("/w/vgg.weights.h5"),
        workers=2,
        queue_size=3,
        max_message_bytes=2048,
        max_pixels=1000,
        default_evaluations=10,
        max_evaluations=20,
        default_size=64,
        max_size=128,
        grace_period=2.5,
        tls_cert=Path("/tls/cert.pem"),
        tls_key=Path("/tls/key.pem"),
        auth_token="tok",
        log_level="DEBUG",
        warmup=False,
        max_request_pixels=900,
        max_inflight_pixels=5000,
        max_styles=3,
        max_calls=9,
        decode_threads=4,
        max_style_size=256,
        max_scales=2,
        linger=7.5,
        result_ttl=60.0,
        max_stored_results=5,
        max_stored_result_bytes=4096,
        tls_client_ca=Path("/tls/ca.pem"),
        require_gpu=True,
        stall_timeout=2.5,
        max_peer_share=0.5,
        max_connection_age_grace=90.0,
    )


def test_a_flag_wins_over_the_environment() -> None:
    env = {"STYLETX_QUEUE_SIZE": "3", "STYLETX_ADDRESS": "0.0.0.0:1"}
    config = load_config(["--queue-size", "7"], env=env)
    assert config.queue_size == 7
    assert config.address == "0.0.0.0:1"


def test_false_boolean_environment_keeps_warmup() -> None:
    assert load_config([], env={"STYLETX_NO_WARMUP": "0"}).warmup is True


@pytest.mark.parametrize(
    ("argv", "env"),
    [
        (["--queue-size", "0"], {}),
        (["--workers", "-1"], {}),
        (["--default-size", "2000"], {}),
        (["--default-evaluations", "50", "--max-evaluations", "10"], {}),
        # The engine's default size (260) above --max-size needs an explicit --default-size.
        (["--max-size", "128"], {}),
        (["--default-preset", "turbo"], {}),
        (["--tls-cert", "/c.pem"], {}),
        (["--metrics-port", "70000"], {}),
        (["--address", "nocolon"], {}),
        ([], {"STYLETX_QUEUE_SIZE": "many"}),
        ([], {"STYLETX_NO_WARMUP": "perhaps"}),
        (["--log-level", "chatty"], {}),
        (["--max-inflight-pixels", "10", "--max-request-pixels", "20"], {}),
        (["--max-styles", "0"], {}),
        (["--max-calls", "0"], {}),
        (["--max-peer-share", "0"], {}),
        (["--max-peer-share", "1.5"], {}),
        (["--stall-timeout", "-1"], {}),
        (["--max-connection-age-grace", "-1"], {}),
        (["--max-style-size", "5000"], {}),
        (["--max-scales", "5"], {}),
        (["--linger", "-1"], {}),
        (["--tls-client-ca", "/ca.pem"], {}),
    ],
)
def test_bad_values_exit_with_usage_error(
    argv: list[str], env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        load_config(argv, env=env)
    assert caught.value.code == 2
    assert "error" in capsys.readouterr().err


def test_help_documents_every_flag_and_its_variable() -> None:
    text = build_parser().format_help()
    flags = [
        "--address", "--metrics-port", "--weights", "--workers", "--queue-size",
        "--max-message-bytes", "--max-pixels", "--default-evaluations", "--max-evaluations",
        "--default-size", "--max-size", "--grace-period", "--tls-cert", "--tls-key",
        "--auth-token", "--log-level", "--no-warmup", "--max-request-pixels",
        "--max-inflight-pixels", "--max-styles", "--max-calls", "--decode-threads",
        "--max-style-size", "--max-scales", "--linger", "--result-ttl", "--max-stored-results",
        "--max-stored-result-bytes", "--tls-client-ca", "--require-gpu",
    ]  # fmt: skip
    for flag in flags:
        assert flag in text
        assert env_name(flag) in text.replace("\n", "").replace(" ", "")


def test_env_name() -> None:
    assert env_name("--max-message-bytes") == "STYLETX_MAX_MESSAGE_BYTES"


def test_server_defaults_follow_the_engine_unless_the_operator_sets_them() -> None:
    from styletx import StyleOptions
    from styletx.presets import preset_values
    from styletx_api.v1 import style_transfer_pb2 as pb
    from styletx_server.intake.convert import resolve_options

    def resolved(argv: list[str]) -> StyleOptions:
        limits = limits_of(load_config(argv, env={}))
        violations: list[object] = []
        options = resolve_options(
            pb.StylizeRequest(),
            limits.base_options(),
            limits.default_preset,
            violations,  # type: ignore[arg-type]
        )
        assert violations == []
        return options

    engine = StyleOptions()
    plain = resolved([])
    assert (plain.size, plain.max_evaluations, plain.preset) == (
        engine.size,
        engine.max_evaluations,
        engine.preset,
    )
    operator = resolved(["--default-size", "128", "--default-evaluations", "50"])
    assert (operator.size, operator.max_evaluations) == (128, 50)
    fast = resolved(["--default-preset", "fast"])
    assert fast.preset == "fast"
    for name, value in preset_values("fast").items():
        assert getattr(fast, name) == value


def test_version_flag_names_the_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    import styletx

    with pytest.raises(SystemExit) as exited:
        load_config(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == (
        f"styletx-server {styletx.__version__} (API styletx.v1)"
    )


def test_every_field_is_a_declared_setting() -> None:
    assert [s.name for s in SETTINGS] == [f.name for f in fields(ServerConfig)]
    assert len({s.flag for s in SETTINGS}) == len({s.env for s in SETTINGS}) == len(SETTINGS)
    warmup = next(s for s in SETTINGS if s.name == "warmup")
    assert (warmup.flag, warmup.env) == ("--no-warmup", "STYLETX_NO_WARMUP")


def _text(setting: Setting) -> str:
    """The declared default as a flag's or variable's text."""
    return str(setting.default)


@pytest.mark.parametrize(
    "setting", [s for s in SETTINGS if s.default is not None], ids=lambda s: s.flag
)
def test_each_default_reads_back_from_its_flag_and_its_variable(setting: Setting) -> None:
    if setting.is_switch:
        assert load_config([], env={setting.env: "0"}) == ServerConfig()
        assert getattr(load_config([setting.flag], env={}), setting.name) != setting.default
        assert getattr(load_config([], env={setting.env: "yes"}), setting.name) != setting.default
        return
    assert load_config([setting.flag, _text(setting)], env={}) == ServerConfig()
    assert load_config([], env={setting.env: _text(setting)}) == ServerConfig()


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        ([], {"STYLETX_QUEUE_SIZE": "many"}, "STYLETX_QUEUE_SIZE: expected an integer, got 'many'"),
        ([], {"STYLETX_NO_WARMUP": "perhaps"}, "STYLETX_NO_WARMUP: expected a boolean"),
        (["--max-peer-share", "0"], {}, "--max-peer-share must be in (0, 1], got 0.0"),
        (["--workers", "-1"], {}, "--workers must be >= 0 (0 = auto), got -1"),
        (["--max-scales", "5"], {}, "--max-scales must be 1-4, got 5"),
        ([], {"STYLETX_BACKEND": "torch"}, "--backend must be one of tensorflow, jax, got 'torch'"),
        (["--address", "nocolon"], {}, "--address must be HOST:PORT, got 'nocolon'"),
        (["--auth-token", " "], {}, "--auth-token must not be blank"),
        (["--tls-cert", "/c.pem"], {}, "--tls-cert and --tls-key must be given together"),
    ],
)
def test_errors_name_the_flag_or_variable_and_the_range(
    argv: list[str], env: dict[str, str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        load_config(argv, env=env)
    assert message in capsys.readouterr().err


def test_log_level_reads_in_any_case() -> None:
    assert ServerConfig(log_level="debug").log_level == "debug"
    assert load_config(["--log-level", "warning"], env={}).log_level == "WARNING"


def test_help_shows_the_environments_value_as_the_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        load_config(["--help"], env={"STYLETX_QUEUE_SIZE": "3"})
    assert exited.value.code == 0
    assert "STYLETX_QUEUE_SIZE] (default: 3)" in " ".join(capsys.readouterr().out.split())


def test_readme_table_of_settings_is_current() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    fresh = splice(readme, markdown_table(SETTINGS))
    assert fresh == readme, "README's table of settings is stale: run tools/settings_table.py"
    for setting in SETTINGS:
        assert f"| `{setting.flag}` | `{setting.env}` |" in readme
