"""Channel settings: target forms, round robin by default for several backends, message limits."""

from __future__ import annotations

import grpc
import pytest

from styletx_client import DEFAULT_MAX_MESSAGE_BYTES, RetryPolicy, TlsConfig
from styletx_client._channel import (
    ClientSettings,
    call_metadata,
    channel_options,
    is_multi_address,
    make_settings,
    normalize_target,
    resolve_credentials,
)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("localhost:50051", "localhost:50051"),
        ("styletx.default.svc:50051", "styletx.default.svc:50051"),
        ("  127.0.0.1:1 ", "127.0.0.1:1"),
        ("dns:///styletx-headless:50051", "dns:///styletx-headless:50051"),
        ("ipv4:127.0.0.1:1,127.0.0.1:2", "ipv4:127.0.0.1:1,127.0.0.1:2"),
        ("127.0.0.1:1, 127.0.0.1:2", "ipv4:127.0.0.1:1,127.0.0.1:2"),
        ("[::1]:1,[::1]:2", "ipv6:[::1]:1,[::1]:2"),
    ],
)
def test_normalize_target(target: str, expected: str) -> None:
    assert normalize_target(target) == expected


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("", "empty"),
        ("host-a:1,host-b:2", "dns:///"),
        ("127.0.0.1:1,[::1]:2", "mix"),
    ],
)
def test_normalize_target_rejects(target: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        normalize_target(target)


@pytest.mark.parametrize(
    ("target", "multi"),
    [
        ("localhost:50051", False),
        ("ipv4:127.0.0.1:1", False),
        ("ipv4:127.0.0.1:1,127.0.0.1:2", True),
        ("dns:///styletx:50051", True),
        ("dns:styletx:50051", True),
        ("unix:/tmp/s.sock", False),
    ],
)
def test_is_multi_address(target: str, multi: bool) -> None:
    assert is_multi_address(target) is multi


def options_dict(
    target: str, lb_policy: str | None = None, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> dict[str, str | int]:
    return dict(
        channel_options(target, lb_policy=lb_policy, max_message_bytes=max_message_bytes, extra=())
    )


def test_round_robin_is_the_default_for_several_backends() -> None:
    assert options_dict("ipv4:127.0.0.1:1,127.0.0.1:2")["grpc.lb_policy_name"] == "round_robin"
    assert options_dict("dns:///styletx:50051")["grpc.lb_policy_name"] == "round_robin"
    assert "grpc.lb_policy_name" not in options_dict("localhost:50051")


def test_lb_policy_can_be_chosen() -> None:
    chosen = options_dict("dns:///styletx:50051", lb_policy="pick_first")
    assert chosen["grpc.lb_policy_name"] == "pick_first"


def test_message_limits_match_the_server_default_and_are_configurable() -> None:
    assert DEFAULT_MAX_MESSAGE_BYTES == 32 * 1024 * 1024
    default = options_dict("localhost:1")
    assert default["grpc.max_send_message_length"] == DEFAULT_MAX_MESSAGE_BYTES
    assert default["grpc.max_receive_message_length"] == DEFAULT_MAX_MESSAGE_BYTES
    small = options_dict("localhost:1", max_message_bytes=1024)
    assert small["grpc.max_receive_message_length"] == 1024


def test_extra_options_override_the_sdk_defaults() -> None:
    options = channel_options(
        "localhost:1",
        lb_policy=None,
        max_message_bytes=10,
        extra=[("grpc.max_receive_message_length", 99), ("grpc.enable_retries", 0)],
    )
    names = [name for name, _ in options]
    assert names.count("grpc.max_receive_message_length") == 1
    assert dict(options)["grpc.max_receive_message_length"] == 99
    assert dict(options)["grpc.enable_retries"] == 0
    assert dict(options)["grpc.primary_user_agent"].startswith("styletx-client/")  # type: ignore[union-attr]


def test_call_metadata_sends_request_id_and_bearer_token() -> None:
    assert call_metadata(None, "r1") == (("x-request-id", "r1"),)
    assert call_metadata("s3cret", "r1") == (
        ("x-request-id", "r1"),
        ("authorization", "Bearer s3cret"),
    )


def test_credentials_resolution() -> None:
    explicit = grpc.ssl_channel_credentials()
    assert resolve_credentials(explicit, False) is explicit
    assert resolve_credentials(None, False) is None
    assert isinstance(resolve_credentials(None, True), grpc.ChannelCredentials)
    assert isinstance(resolve_credentials(None, TlsConfig()), grpc.ChannelCredentials)


def make(**overrides: object) -> ClientSettings:
    kwargs: dict[str, object] = {
        "credentials": None,
        "tls": False,
        "token": None,
        "timeout": None,
        "retry": None,
        "lb_policy": None,
        "max_message_bytes": DEFAULT_MAX_MESSAGE_BYTES,
        "options": (),
    }
    kwargs.update(overrides)
    return make_settings("127.0.0.1:1,127.0.0.1:2", **kwargs)  # type: ignore[arg-type]


def test_make_settings_normalizes_and_defaults_the_retry_policy() -> None:
    settings = make()
    assert settings.target == "ipv4:127.0.0.1:1,127.0.0.1:2"
    assert settings.retry == RetryPolicy()


@pytest.mark.parametrize(
    "overrides", [{"timeout": 0.0}, {"timeout": -1.0}, {"max_message_bytes": 0}]
)
def test_make_settings_rejects_bad_values(overrides: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        make(**overrides)


def test_the_clients_one_channel_balances_a_dns_name_round_robin() -> None:
    """A fleet's headless Service is one channel with gRPC's round_robin: the SDK resolves and
    hashes nothing itself, and gRPC keeps the name as :authority (TLS verifies the name)."""
    settings = make_settings(
        "dns:///styletx.test:50051",
        credentials=None,
        tls=False,
        token=None,
        timeout=None,
        retry=None,
        lb_policy=None,
        max_message_bytes=DEFAULT_MAX_MESSAGE_BYTES,
        options=(),
    )
    options = dict(settings.channel_options())
    assert options["grpc.lb_policy_name"] == "round_robin"
    assert "grpc.default_authority" not in options


def test_a_callers_options_win() -> None:
    settings = make(options=[("grpc.lb_policy_name", "pick_first")])
    options = settings.channel_options()
    assert [v for k, v in options if k == "grpc.lb_policy_name"] == ["pick_first"]
