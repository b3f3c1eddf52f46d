"""The names the API puts on the wire beside its messages (ErrorInfo domain, metadata keys, the
authorization scheme) live in one place, `styletx_api.wire`: the server and the SDK import them
from there and spell none of them out themselves, so the two sides cannot drift apart."""

from __future__ import annotations

import ast
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest

from styletx_api import wire
from styletx_api.v1 import style_transfer_pb2 as pb

ROOT = Path(__file__).resolve().parents[2]
SIDES = {
    "server": ROOT / "server" / "styletx_server",
    "sdk": ROOT / "client" / "styletx_client",
}
#: Every constant of the module, name -> value (the frozenset of keys aside).
WIRE_STRINGS = {name: getattr(wire, name) for name in wire.__all__ if name != "CALL_METADATA_KEYS"}
#: What each side must take from `styletx_api.wire` (what it sends or reads).
USED_BY = {
    "server": {"ERROR_DOMAIN", "REQUEST_ID_KEY", "AUTHORIZATION_KEY", "BEARER_SCHEME"},
    "sdk": {
        "ERROR_DOMAIN",
        "REQUEST_ID_KEY",
        "REQUEST_KEY_KEY",
        "AUTHORIZATION_KEY",
        "BEARER_SCHEME",
        "STATUS_DETAILS_KEY",
        "CALL_METADATA_KEYS",
    },
}


def _sources(side: str) -> list[Path]:
    return sorted(p for p in SIDES[side].rglob("*.py") if "__pycache__" not in p.parts)


def _wire_imports(path: Path) -> set[str]:
    """Names `path` imports from styletx_api.wire."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module == "styletx_api.wire":
            names |= {alias.name for alias in node.names}
    return names


def test_the_module_is_typed_documented_and_exports_every_constant() -> None:
    tree = ast.parse(Path(wire.__file__).read_text(encoding="utf-8"))
    assert ast.get_docstring(tree)
    body = tree.body
    assigned = {
        node.target.id: body[i + 1]
        for i, node in enumerate(body)
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
    }
    assert set(assigned) == set(wire.__all__)
    for name, following in assigned.items():  # each constant has its docstring below it
        assert isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant), name


def test_the_constants_agree_with_the_proto_and_grpc() -> None:
    assert pb.DESCRIPTOR.package == wire.ERROR_DOMAIN
    keys = [wire.REQUEST_ID_KEY, wire.REQUEST_KEY_KEY, wire.AUTHORIZATION_KEY]
    assert frozenset(keys) == wire.CALL_METADATA_KEYS
    for key in [*keys, wire.STATUS_DETAILS_KEY]:  # gRPC refuses upper-case metadata keys
        assert key == key.lower() and key.strip() == key, key
    assert len(set(WIRE_STRINGS.values())) == len(WIRE_STRINGS)


@pytest.mark.parametrize("side", sorted(SIDES))
def test_no_copy_of_a_wire_constant_on_either_side(side: str) -> None:
    """No string literal in server/ or client/ spells a wire constant (any case, any padding:
    `"Bearer "` of an f-string counts)."""
    wanted = {value.lower(): name for name, value in WIRE_STRINGS.items()}
    copies = [
        f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r} (styletx_api.wire.{name})"
        for path in _sources(side)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        if (name := wanted.get(node.value.strip().lower()))
    ]
    assert not copies, "\n".join(copies)


@pytest.mark.parametrize("side", sorted(SIDES))
def test_each_side_takes_them_from_the_api(side: str) -> None:
    imported = set().union(*(_wire_imports(path) for path in _sources(side)))
    assert imported <= set(wire.__all__), imported - set(wire.__all__)
    assert USED_BY[side] <= imported, USED_BY[side] - imported


def test_what_the_sdk_sends_is_what_the_server_reads() -> None:
    from styletx_client._channel import call_metadata
    from styletx_client._propagation import RESERVED_KEYS
    from styletx_server.observe.logs import request_id_from
    from styletx_server.security.auth import bearer_token, token_matches

    sent = call_metadata("s3cret", "rid-1", "key-1")
    assert request_id_from(sent) == "rid-1"
    assert bearer_token(sent) == "s3cret" and token_matches(sent, "s3cret")
    assert dict(sent)[wire.REQUEST_KEY_KEY] == "key-1"
    assert RESERVED_KEYS == wire.CALL_METADATA_KEYS


class _RpcError(grpc.RpcError):
    """An RpcError carrying a status as grpcio's would (code, details, metadata)."""

    def __init__(self, status: grpc.Status, initial: Sequence[tuple[str, str]] = ()) -> None:
        self._status = status
        self._initial = tuple(initial)

    def code(self) -> grpc.StatusCode:
        return self._status.code

    def details(self) -> str:
        return self._status.details

    def trailing_metadata(self) -> tuple[Any, ...]:
        return tuple(self._status.trailing_metadata)

    def initial_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._initial


def test_the_sdk_reads_the_servers_error_details() -> None:
    """A server status (ErrorInfo in the rich-details trailer) is the SDK's typed error, in the
    styletx domain, with the request id the server echoed."""
    from styletx_client import AuthenticationError, from_rpc_error
    from styletx_client.errors import Reason
    from styletx_server.errors import statuses

    status = statuses.unauthenticated()
    assert wire.STATUS_DETAILS_KEY in dict(status.trailing_metadata)
    error = from_rpc_error(_RpcError(status, [(wire.REQUEST_ID_KEY, "rid-2")]))
    assert isinstance(error, AuthenticationError)
    assert (error.domain, error.reason) == (wire.ERROR_DOMAIN, Reason.UNAUTHENTICATED)
    assert error.request_id == "rid-2"
