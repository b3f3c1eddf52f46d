"""Tenants: who a call is for, and that tenant's share of the server.

A tenant is named by the tokens file (`--auth-tokens-file`, TOML): each `[tenants.NAME]` table
lists the bearer tokens and the mTLS certificate subjects that stand for it, and its share:
`weight` (fair queueing), `max_queued` (jobs waiting), `max_running` (jobs running at once) and
`max_calls` (open streaming calls). Callers the file does not name (a server with no tokens file,
`--auth-token`, or no authentication at all) are the one `default` tenant, whose calls share the
call slots by peer address as before.

The file is re-read when it changes, never by a call: a call looks at the file's metadata (one
`stat`) and, when it changed, starts a thread that reads and parses it while the calls go on with
the mapping in force; the new mapping applies from the moment it is parsed. A file that does not
parse keeps the previous mapping and is logged once. The file is bounded (`MAX_FILE_BYTES`, read
no further, and `MAX_TENANTS`), so a parse takes a bounded time, and so are weights
(`MIN_WEIGHT`..`MAX_WEIGHT`). Tenants the new file no longer names are gone from `names` at once;
listeners (`subscribe`) are told which, to drop what they keep per tenant (metric series).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import re
import threading
import time
import tomllib
from collections.abc import Callable, Mapping
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
#: Weights a tenant may have: one tenant gets at most a million times another's share.
MIN_WEIGHT = 0.001
MAX_WEIGHT = 1000.0
#: Largest tokens file read (bytes) and most tenants it may name: a parse takes well under a
#: second (1,000 tenants: 0.08 s on one core; 60,000 took 8 s), and the tenant metric labels stay
#: bounded.
MAX_FILE_BYTES = 256 * 1024
MAX_TENANTS = 1000
#: What a tenant directory's listener is told after a reload: the names now, and those removed.
Listener = Callable[[frozenset[str], frozenset[str]], None]


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
    if len(tables) > MAX_TENANTS:
        raise ValueError(f"{len(tables)} tenants: at most {MAX_TENANTS}")
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
        if not (math.isfinite(weight) and MIN_WEIGHT <= weight <= MAX_WEIGHT):
            raise ValueError(
                f"tenants.{name}.weight must be between {MIN_WEIGHT:g} and {MAX_WEIGHT:g}, "
                f"got {weight}"
            )
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


def read_tokens_file(path: Path) -> bytes:
    """The file's bytes, read no further than `MAX_FILE_BYTES` (ValueError past it; OSError)."""
    with path.open("rb") as file:
        content = file.read(MAX_FILE_BYTES + 1)
    if len(content) > MAX_FILE_BYTES:
        raise ValueError(f"more than {MAX_FILE_BYTES} bytes")
    return content


def load_tokens_file(path: Path) -> tuple[bytes, TenantMap]:
    """Read and parse the file: its bytes and its mapping; ValueError naming the file and its
    first problem (the tenant, for a bad table)."""
    try:
        content = read_tokens_file(path)
        return content, parse_tokens(content.decode())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"--auth-tokens-file {path}: {exc}") from None


def check_tokens_file(path: Path) -> None:
    """ValueError naming the file and its first problem, when it cannot be read or parsed."""
    load_tokens_file(path)


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
        self._listeners: list[Listener] = []
        #: Set while no reload runs (a thread parses a changed file).
        self._idle = threading.Event()
        self._idle.set()
        if path is not None:
            try:
                self._signature = _signature(path)  # before reading: a later change is seen
            except OSError as exc:
                raise ValueError(f"--auth-tokens-file {path}: {exc}") from None
            self._content, self._map = load_tokens_file(path)
        #: The default tenant and those the file names now (the metric labels in use).
        self.names: frozenset[str] = frozenset({DEFAULT_NAME, *self._map.tenants})

    @property
    def required(self) -> bool:
        """Callers must prove who they are (a tokens file or `--auth-token`)."""
        return self.path is not None or self._auth_token is not None

    def subscribe(self, listener: Listener) -> None:
        """Call `listener(names, removed)` each time a new mapping is in force (on the reload's
        thread): the names now, and the tenants the file no longer names."""
        with self._lock:
            self._listeners.append(listener)

    def current(self) -> TenantMap:
        """The mapping in force; a changed file is being parsed on another thread meanwhile."""
        if self.path is not None:
            self._check(self.path)
        return self._map

    def settle(self, timeout: float = 30.0) -> bool:
        """Wait until the file as it is now is in force (or refused): False on timeout. For
        tests and tools; calls never wait."""
        path = self.path
        deadline = time.monotonic() + timeout
        while path is not None:
            self._check(path)
            if not self._idle.wait(max(0.0, deadline - time.monotonic())):
                return False
            try:
                if _signature(path) == self._signature:
                    break
            except OSError:
                break
        return True

    def _check(self, path: Path) -> None:
        """One `stat`; when the file changed, start a reload unless one runs (the next look
        after it ends sees any later change)."""
        try:
            signature = _signature(path)
        except OSError as exc:
            with self._lock:
                if self._signature is not None:
                    log_event(log, "tokens_file_unreadable", level=logging.ERROR, error=str(exc))
                    self._signature = None
            return
        if signature == self._signature:
            return
        with self._lock:
            if signature == self._signature or not self._idle.is_set():
                return
            self._signature = signature
            self._idle.clear()
        thread = threading.Thread(
            target=self._reload, args=(path,), name="styletx-tokens-file", daemon=True
        )
        thread.start()

    def _reload(self, path: Path) -> None:
        """On the reload thread: parse the file when its bytes changed; a bad file keeps the
        old mapping."""
        try:
            self._parse(path)
        except Exception as exc:  # never leave the directory marked busy
            log_event(log, "tokens_file_reload_failed", level=logging.ERROR, exc_info=exc)
        finally:
            self._idle.set()

    def _parse(self, path: Path) -> None:
        content: bytes | None = None
        try:
            content = read_tokens_file(path)
            if content == self._content:
                return
            mapping = parse_tokens(content.decode())
        except OSError as exc:
            log_event(log, "tokens_file_unreadable", level=logging.ERROR, error=str(exc))
            return
        except (ValueError, UnicodeDecodeError) as exc:
            # Logged once per bad content (None: too large to read); the old mapping stays.
            if content is None or content != self._content:
                self._content = content
                log_event(
                    log, "tokens_file_invalid", level=logging.ERROR, path=str(path), error=str(exc)
                )
            return
        self._install(path, content, mapping)

    def _install(self, path: Path, content: bytes, mapping: TenantMap) -> None:
        names = frozenset({DEFAULT_NAME, *mapping.tenants})
        with self._lock:
            removed = self.names - names
            self._content, self._map, self.names = content, mapping, names
            listeners = list(self._listeners)
        log_event(
            log,
            "tokens_file_loaded",
            path=str(path),
            tenants=len(mapping.tenants),
            removed=sorted(removed),
        )
        for listener in listeners:
            try:
                listener(names, removed)
            except Exception as exc:  # one listener's failure must not stop the others
                log_event(log, "tokens_file_listener_failed", level=logging.ERROR, exc_info=exc)

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
    "MAX_FILE_BYTES",
    "MAX_TENANTS",
    "MAX_WEIGHT",
    "MIN_WEIGHT",
    "NAME_RULE",
    "Listener",
    "Tenant",
    "TenantDirectory",
    "TenantMap",
    "certificate_subjects",
    "check_tokens_file",
    "load_tokens_file",
    "parse_tokens",
    "read_tokens_file",
]
