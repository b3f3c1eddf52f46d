"""The bearer-token check: one header, scheme in any case, constant-time token comparison."""

from __future__ import annotations

import pytest

from styletx_server.security.auth import token_matches


@pytest.mark.parametrize(
    "metadata",
    [
        [("authorization", "Bearer tok")],
        [("authorization", "bearer tok")],
        [("Authorization", "BEARER tok")],
        [("authorization", "Bearer  tok ")],
        [("other", "x"), ("authorization", b"Bearer tok")],
    ],
)
def test_accepted(metadata: list[tuple[str, str | bytes]]) -> None:
    assert token_matches(metadata, "tok")


@pytest.mark.parametrize(
    "metadata",
    [
        [],
        None,
        [("authorization", "tok")],
        [("authorization", "Basic tok")],
        [("authorization", "Bearer tok2")],
        [("authorization", "Bearertok")],
        [("authorization", "Bearer tok"), ("authorization", "Bearer tok")],
        [("authorization", "Bearer tok"), ("authorization", "Bearer other")],
    ],
)
def test_refused(metadata: list[tuple[str, str | bytes]] | None) -> None:
    assert not token_matches(metadata, "tok")
