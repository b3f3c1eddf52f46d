"""The tokens file: parsing, every rejected shape, and the directory that re-reads it."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest

from styletx_server.ops.config import load_config
from styletx_server.security.auth import bearer_token
from styletx_server.security.tenants import (
    DEFAULT,
    MAX_FILE_BYTES,
    MAX_TENANTS,
    MAX_WEIGHT,
    MIN_WEIGHT,
    TenantDirectory,
    certificate_subjects,
    check_tokens_file,
    parse_tokens,
)

GOOD = """
# Two tenants; shop has a second token while its first is rotated out.
[tenants.shop]
tokens = ["shop-1", "shop-2"]
subjects = ["shop.internal"]
weight = 2
max_queued = 8
max_running = 2
max_calls = 16

[tenants.batch]
tokens = ["batch-1"]
"""


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def test_a_file_parses_into_tenants_tokens_and_subjects() -> None:
    mapping = parse_tokens(GOOD)
    shop, batch = mapping.tenants["shop"], mapping.tenants["batch"]
    assert (shop.weight, shop.max_queued, shop.max_running, shop.max_calls) == (2.0, 8, 2, 16)
    assert (batch.weight, batch.max_queued, batch.max_running, batch.max_calls) == (1.0,) + (
        None,
    ) * 3
    assert shop.named and batch.named
    assert mapping.by_subject == {"shop.internal": shop}
    assert len(mapping.by_token) == 3
    assert all(token not in repr(mapping) for token in ("shop-1", "batch-1"))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("tenants = 1", "no [tenants.NAME] table"),
        ("[tenants.a]\ntokens = ['t']\n[other]\nx = 1", "unknown top-level keys"),
        ("[tenants.A]\ntokens = ['t']", "tenant name 'A'"),
        ("[tenants.default]\ntokens = ['t']", "tenant name 'default'"),
        ("[tenants.a]\ntoken = ['t']", "unknown keys token"),
        ("[tenants.a]\nweight = 1", "neither tokens nor subjects"),
        ("[tenants.a]\ntokens = ['t']\nweight = 0", "weight must be between 0.001 and 1000"),
        ("[tenants.a]\ntokens = ['t']\nweight = true", "weight must be a number"),
        ("[tenants.a]\ntokens = ['t']\nmax_running = 0", "max_running must be an integer >= 1"),
        ("[tenants.a]\ntokens = ['t']\nmax_queued = -1", "max_queued must be an integer >= 0"),
        ("[tenants.a]\ntokens = ['']", "tokens must be a list of non-blank strings"),
        ("[tenants.a]\ntokens = ['t']\n[tenants.b]\ntokens = ['t']", "another tenant's"),
        ("[tenants.a\n", "not valid TOML"),
    ],
)
def test_bad_files_are_refused_naming_the_problem(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem.replace("[", r"\[").replace(".", r"\.")):
        parse_tokens(text)


def test_bearer_tokens_and_certificate_subjects_are_read_from_the_call() -> None:
    assert bearer_token(bearer("abc")) == "abc"
    assert bearer_token((("authorization", "bearer  abc "),)) == "abc"
    assert bearer_token((("authorization", "Basic abc"),)) is None
    assert bearer_token(bearer("a") + bearer("b")) is None
    context = {"x509_common_name": [b"svc"], "x509_subject_alternative_name": [b"svc.ns", b"x"]}
    assert certificate_subjects(context) == ["svc", "svc.ns", "x"]


def test_the_directory_identifies_by_token_then_subject(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text(GOOD)
    directory = TenantDirectory(path, auth_token="legacy")
    assert directory.required and directory.names == {"default", "shop", "batch"}
    assert directory.identify(bearer("shop-2"), {}).name == "shop"  # type: ignore[union-attr]
    assert directory.identify(bearer("legacy"), {}) is DEFAULT
    assert directory.identify(bearer("nope"), {}) is None
    subject = {"x509_common_name": [b"shop.internal"]}
    assert directory.identify((), subject).name == "shop"  # type: ignore[union-attr]
    assert directory.identify((), {"x509_common_name": [b"else"]}) is None
    assert directory.admits(bearer("batch-1"), mtls=False)
    assert not directory.admits(bearer("nope"), mtls=False)
    assert directory.admits(bearer("nope"), mtls=True)  # the handler checks the certificate


def test_without_credentials_configured_everyone_is_the_default_tenant() -> None:
    directory = TenantDirectory()
    assert not directory.required
    assert directory.identify((), {}) is DEFAULT
    assert directory.admits((), mtls=False)


def test_a_changed_file_is_used_once_parsed_and_a_bad_one_keeps_the_old(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text(GOOD)
    directory = TenantDirectory(path)
    path.write_text("[tenants.fresh]\ntokens = ['fresh-1']\nweight = 3\n")
    assert directory.settle(10)
    assert directory.identify(bearer("fresh-1"), {}).weight == 3.0  # type: ignore[union-attr]
    assert directory.identify(bearer("shop-1"), {}) is None
    with caplog.at_level(logging.ERROR):
        path.write_text("[tenants.broken\n")
        assert directory.settle(10)
        assert directory.identify(bearer("fresh-1"), {}) is not None
        assert directory.settle(10)
        assert directory.identify(bearer("fresh-1"), {}) is not None
    invalid = [r for r in caplog.records if r.getMessage() == "tokens_file_invalid"]
    assert len(invalid) == 1  # logged once, not on every call
    path.unlink()
    assert directory.identify(bearer("fresh-1"), {}) is not None  # a missing file: the old map
    assert directory.settle(10)
    # The names are those of the mapping in force: shop and batch left with the first change.
    assert directory.names == {"default", "fresh"}


def test_the_flag_and_its_environment_twin_check_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text(GOOD)
    assert load_config(["--auth-tokens-file", str(path)], env={}).auth_tokens_file == path
    env = {"STYLETX_AUTH_TOKENS_FILE": str(path)}
    assert load_config([], env=env).auth_tokens_file == path
    path.write_text("[tenants.a]\n")
    with pytest.raises(SystemExit):
        load_config([], env=env)
    assert "--auth-tokens-file" in capsys.readouterr().err


def many_tenants(count: int) -> str:
    return "".join(f'[tenants.t{i}]\ntokens = ["token-{i:08d}"]\n' for i in range(count))


@pytest.mark.parametrize("weight", ["1e-300", "0.0009", "1001", "inf", "nan"])
def test_weights_are_bounded_both_ways_naming_the_file_and_the_tenant(
    tmp_path: Path, weight: str
) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text(
        f"[tenants.ok]\ntokens = ['a']\n[tenants.tiny]\ntokens = ['t']\nweight = {weight}"
    )
    for load in (check_tokens_file, TenantDirectory):
        with pytest.raises(ValueError) as refused:
            load(path)
        message = str(refused.value)
        assert str(path) in message and "tenants.tiny.weight" in message
        assert f"between {MIN_WEIGHT:g} and {MAX_WEIGHT:g}" in message


def test_the_bounds_themselves_are_accepted() -> None:
    text = f"[tenants.lo]\ntokens = ['l']\nweight = {MIN_WEIGHT}\n"
    text += f"[tenants.hi]\ntokens = ['h']\nweight = {MAX_WEIGHT}\n"
    mapping = parse_tokens(text)
    assert mapping.tenants["lo"].weight == MIN_WEIGHT and mapping.tenants["hi"].weight == MAX_WEIGHT


def test_a_changed_file_is_parsed_off_the_call_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attack: a 60,000-tenant file took 7.1 s to parse, inside a call. Now the call goes
    on with the mapping in force while a thread parses the new file."""
    import styletx_server.security.tenants as tenants

    path = tmp_path / "tokens.toml"
    path.write_text(GOOD)
    directory = TenantDirectory(path)
    parse = tenants.parse_tokens
    started, release = threading.Event(), threading.Event()

    def slow_parse(text: str) -> tenants.TenantMap:
        started.set()
        assert release.wait(10)
        return parse(text)

    monkeypatch.setattr(tenants, "parse_tokens", slow_parse)
    path.write_text(GOOD.replace("batch-1", "batch-2"))
    began = time.monotonic()
    assert directory.identify(bearer("batch-1"), {}) is not None  # the old mapping, at once
    assert directory.identify(bearer("batch-2"), {}) is None
    assert time.monotonic() - began < 1.0
    assert started.wait(10)
    release.set()
    assert directory.settle(10)
    assert directory.identify(bearer("batch-2"), {}) is not None
    assert directory.identify(bearer("batch-1"), {}) is None


def test_the_file_is_bounded_in_bytes_and_tenants(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text(many_tenants(60_000))  # 60,000 tenants: the attack's file
    with pytest.raises(ValueError, match=f"more than {MAX_FILE_BYTES} bytes"):
        check_tokens_file(path)
    with pytest.raises(ValueError, match=f"at most {MAX_TENANTS}"):
        parse_tokens(many_tenants(MAX_TENANTS + 1))
    assert len(parse_tokens(many_tenants(MAX_TENANTS)).tenants) == MAX_TENANTS
    # At run time a file over the bound keeps the mapping in force, never read in full.
    path.write_text(GOOD)
    directory = TenantDirectory(path)
    with caplog.at_level(logging.ERROR):
        path.write_text(many_tenants(60_000))
        directory.identify(bearer("shop-1"), {})
        assert directory.settle(10)
    assert directory.identify(bearer("shop-1"), {}) is not None
    [invalid] = [r for r in caplog.records if r.getMessage() == "tokens_file_invalid"]
    assert "bytes" in str(getattr(invalid, "styletx_fields", {}).get("error"))


def test_removed_tenants_leave_the_names_and_the_listeners_hear_of_it(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text(many_tenants(50))
    heard: list[tuple[frozenset[str], frozenset[str]]] = []
    directory = TenantDirectory(path)
    directory.subscribe(lambda names, removed: heard.append((names, removed)))
    assert len(directory.names) == 51
    path.write_text(GOOD)
    directory.identify((), {})
    assert directory.settle(10)
    assert directory.names == {"default", "shop", "batch"}
    assert heard == [(directory.names, frozenset(f"t{i}" for i in range(50)))]
