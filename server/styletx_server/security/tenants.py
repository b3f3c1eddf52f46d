"""Tenants: who a call is for, and that tenant's share of the server.

A tenant is named by the tokens file (`--auth-tokens-file`, TOML): each `[tenants.NAME]` table
lists the bearer tokens and the mTLS certificate subjects that stand for it, and its share:
`weight` (fair queueing), `max_queued` (jobs waiting), `max_running` (jobs running at once) and
`max_calls` (open streaming calls). Callers the file does not name (a server with no tokens file,
`--auth-token`, or no authentication at all) are the one `default` tenant, whose calls share the
call slots by peer address as before. The file is re-read when it changes (checked with a `stat`
on each call, parsed only when its bytes differ); a file that does not parse keeps the previous
mapping and is logged once.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import re
import threading
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from styletx_server.observe.logs import log_event
from styletx_server.security.auth import bearer_token

log = logging.getLogger(__name__)

#: The tenant of every caller the tokens file does not name; a fixed metric label.
DEFAULT_NAME = "default"
#: What a tenant's name may be: a metric label value and part of a job's registry key.
NAME_RULE = "1-63 characters of [a-z0-9_.-], starting with a letter or digit"
_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
_KEYS = frozenset({"tokens", "subjects", "weight", "max_queued", "max_running", "max_calls"})
#: Largest weight: keeps the fair queue's virtual clock far from float trouble.
MAX_WEIGHT = 1000.0


@dataclass(frozen=True)
class Tenant:
    """One tenant and its share; None: no bound of the tenant's own (the server's apply)."""

    name: str
    weight: float = 1.0
    max_queued: int | None = None
    max_running: int | None = None
    max_calls: int | None = None
    #: Named by the tokens file (its calls count against the tenant, not the peer address).
    named: bool = False


DEFAULT = Tenant(DEFAULT_NAME)


@dataclass(frozen=True)
class TenantMap:
    """A parsed tokens file: tenants by name, by the SHA-256 of a token, by certificate subject."""

    tenants: Mapping[str, Tenant] = field(default_factory=dict)
    by_token: Mapping[bytes, Tenant] = field(default_factory=dict)
    by_subject: Mapping[str, Tenant] = field(default_factory=dict)


def _digest(token: str) -> bytes:
    """Tokens are looked up by digest: a lookup's timing says nothing about the token itself."""
    return hashlib.sha256(token.encode()).digest()


def _count(name: str, table: Mapping[str, Any], key: str, minimum: int) -> int | None:
    value = table.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"tenants.{name}.{key} must be an integer >= {minimum}, got {value!r}")
    return value


def _strings(name: str, table: Mapping[str, Any], key: str) -> list[str]:
    values = table.get(key, [])
    if not isinstance(values, list) or not all(isinstance(v, str) and v.strip() for v in values):
        raise ValueError(f"tenants.{name}.{key} must be a list of non-blank strings")
    return [v.strip() for v in values]


def parse_tokens(text: str) -> TenantMap:
    """Parse a tokens file (TOML); ValueError naming the first problem."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"not valid TOML: {exc}") from None
    unknown = set(document) - {"tenants"}
    if unknown:
        raise ValueError(f"unknown top-level keys: {', '.join(sorted(unknown))}")
    tables = document.get("tenants")
    if not isinstance(tables, dict) or not tables:
        raise ValueError("no [tenants.NAME] table")
    tenants: dict[str, Tenant] = {}
    by_token: dict[bytes, Tenant] = {}
    by_subject: dict[str, Tenant] = {}
    for name, table in tables.items():
        if not _NAME.fullmatch(name) or name == DEFAULT_NAME:
            raise ValueError(f"tenant name {name!r}: must be {NAME_RULE}, not {DEFAULT_NAME!r}")
        if not isinstance(table, dict):
            raise ValueError(f"tenants.{name} must be a table")
        if unknown := set(table) - _KEYS:
            raise ValueError(f"tenants.{name}: unknown keys {', '.join(sorted(unknown))}")
        weight = table.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise ValueError(f"tenants.{name}.weight must be a number")
        if not (math.isfinite(weight) and 0 < weight <= MAX_WEIGHT):
            raise ValueError(f"tenants.{name}.weight must be in (0, {MAX_WEIGHT:g}], got {weight}")
        tenant = Tenant(
            name,
            weight=float(weight),
            max_queued=_count(name, table, "max_queued", 0),
            max_running=_count(name, table, "max_running", 1),
            max_calls=_count(name, table, "max_calls", 1),
            named=True,
        )
        tokens, subjects = _strings(name, table, "tokens"), _strings(name, table, "subjects")
        if not tokens and not subjects:
            raise ValueError(f"tenants.{name} has neither tokens nor subjects")
        for token in tokens:
            if by_token.setdefault(_digest(token), tenant) is not tenant:
                raise ValueError(f"tenants.{name}: a token is also another tenant's")
        for subject in subjects:
            if by_subject.setdefault(subject, tenant) is not tenant:
                raise ValueError(f"tenants.{name}: subject {subject!r} is another tenant's")
        tenants[name] = tenant
    return TenantMap(tenants, by_token, by_subject)


def check_tokens_file(path: Path) -> None:
    """ValueError naming the file and its first problem, when it cannot be read or parsed."""
    try:
        parse_tokens(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"--auth-tokens-file {path}: {exc}") from None


def certificate_subjects(auth_context: Mapping[str, Any]) -> list[str]:
    """A verified client certificate's common name and subject alternative names (mTLS)."""
    found: list[str] = []
    for key in ("x509_common_name", "x509_subject_alternative_name"):
        for value in auth_context.get(key, ()) or ():
            found.append(value.decode() if isinstance(value, bytes) else str(value))
    return found


class TenantDirectory:
    """The live token/subject -> tenant mapping; thread-safe, re-read when the file changes.

    `auth_token` (`--auth-token`) stands for the default tenant; without a tokens file and a
    token every caller is the default tenant (mTLS, if on, has already vetted the certificate).
    """

    def __init__(self, path: Path | None = None, *, auth_token: str | None = None) -> None:
        self.path = path
        self._auth_token = auth_token
        self._lock = threading.Lock()
        self._map = TenantMap()
        self._signature: tuple[int, ...] | None = None
        self._content: bytes | None = None
        #: Every tenant name the file has held since the start (bounds the metric labels).
        self.names: set[str] = {DEFAULT_NAME}
        if path is not None:
            self._map = parse_tokens(path.read_text())
            self.names.update(self._map.tenants)
            self._signature = _signature(path)
            self._content = path.read_bytes()

    @property
    def required(self) -> bool:
        """Callers must prove who they are (a tokens file or `--auth-token`)."""
        return self.path is not None or self._auth_token is not None

    def current(self) -> TenantMap:
        """The mapping now, after re-reading the file if its metadata changed."""
        path = self.path
        if path is None:
            return self._map
        with self._lock:
            try:
                signature = _signature(path)
            except OSError as exc:
                if self._signature is not None:
                    log_event(log, "tokens_file_unreadable", level=logging.ERROR, error=str(exc))
                    self._signature = None
                return self._map
            if signature == self._signature:
                return self._map
            self._signature = signature
            self._reload(path)
            return self._map

    def _reload(self, path: Path) -> None:
        """Under the lock: parse the file when its bytes changed; a bad file keeps the old map."""
        try:
            content = path.read_bytes()
        except OSError as exc:
            log_event(log, "tokens_file_unreadable", level=logging.ERROR, error=str(exc))
            return
        if content == self._content:
            return
        self._content = content
        try:
            mapping = parse_tokens(content.decode())
        except (ValueError, UnicodeDecodeError) as exc:
            log_event(
                log, "tokens_file_invalid", level=logging.ERROR, path=str(path), error=str(exc)
            )
            return
        self._map = mapping
        self.names.update(mapping.tenants)
        log_event(log, "tokens_file_loaded", path=str(path), tenants=sorted(mapping.tenants))

    def _by_token(self, token: str | None, mapping: TenantMap) -> Tenant | None:
        if token is None:
            return None
        tenant = mapping.by_token.get(_digest(token))
        if tenant is not None:
            return tenant
        if self._auth_token is not None and hmac.compare_digest(
            token.encode(), self._auth_token.encode()
        ):
            return DEFAULT
        return None

    def admits(self, metadata: Any, mtls: bool) -> bool:
        """The interceptor's check: a known token, no credentials needed, or an mTLS caller whose
        certificate the handler maps (`identify`, which has the certificate)."""
        if not self.required:
            return True
        mapping = self.current()
        if self._by_token(bearer_token(metadata), mapping) is not None:
            return True
        return mtls and bool(mapping.by_subject)

    def identify(self, metadata: Any, auth_context: Mapping[str, Any]) -> Tenant | None:
        """The caller's tenant: its token's, else its certificate subject's, else the default
        tenant where no credentials are needed; None: unauthenticated."""
        mapping = self.current()  # one look at the file per call
        tenant = self._by_token(bearer_token(metadata), mapping)
        if tenant is not None:
            return tenant
        by_subject = mapping.by_subject
        for subject in certificate_subjects(auth_context):
            if (tenant := by_subject.get(subject)) is not None:
                return tenant
        return None if self.required else DEFAULT

    def tenant(self, name: str) -> Tenant:
        """The current share of the tenant `name` (the default tenant's when it left the file)."""
        return self.current().tenants.get(name, DEFAULT)


def _signature(path: Path) -> tuple[int, ...]:
    """What changes when the file (or the symlink a Kubernetes Secret mount swaps) changes."""
    st = path.stat()
    return (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


__all__ = [
    "DEFAULT",
    "DEFAULT_NAME",
    "NAME_RULE",
    "Tenant",
    "TenantDirectory",
    "TenantMap",
    "certificate_subjects",
    "check_tokens_file",
    "parse_tokens",
]
