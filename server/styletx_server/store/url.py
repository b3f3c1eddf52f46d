"""Where the job store lives: `--store` / `STYLETX_STORE` parsed, and written back for logs.

Accepted forms:

- `memory://` (the default): an in-process store; one replica, today's behaviour.
- `redis://[user:password@]host[:port][/db][?prefix=NAME&timeout=SECONDS]`, and `rediss://` for
  TLS. The port defaults to 6379, the database to 0; `prefix` names the hash tag every key sits
  under (`{styletx}` by default, so a Redis Cluster keeps them on one slot); `timeout` bounds
  each store call in seconds (default 2). User and password may be percent-encoded.

The password is never part of any text made from a URL: `StoreURL.redacted` (also its `str()`
and `repr()`) writes `***` in its place, and `redact` does the same for text that is not a URL
yet, so a setting's error message never carries it either.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from urllib.parse import SplitResult, parse_qsl, quote, unquote, urlsplit

#: Schemes `parse_store_url` accepts.
SCHEMES = ("memory", "redis", "rediss")
DEFAULT_PORT = 6379
DEFAULT_PREFIX = "styletx"
#: Seconds a store call may take before it fails with StoreUnavailable, unless the URL says.
DEFAULT_TIMEOUT = 2.0
#: What the setting's help and errors say the URL must look like.
URL_RULE = "memory:// or redis[s]://[user:password@]host[:port][/db][?prefix=NAME&timeout=SECONDS]"
_PREFIX = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_MASK = "***"


@dataclass(frozen=True)
class StoreURL:
    """A parsed store URL. `password` never appears in `str()`, `repr()` or `redacted`."""

    scheme: str
    host: str = ""
    port: int = DEFAULT_PORT
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    prefix: str = DEFAULT_PREFIX
    timeout: float = DEFAULT_TIMEOUT

    @property
    def is_memory(self) -> bool:
        return self.scheme == "memory"

    @property
    def tls(self) -> bool:
        return self.scheme == "rediss"

    @property
    def redacted(self) -> str:
        """The URL as logs may show it: the password, if any, as `***`."""
        if self.is_memory:
            return "memory://"
        credentials = ""
        if self.username is not None or self.password is not None:
            user = quote(self.username or "", safe="")
            credentials = f"{user}:{_MASK}@" if self.password is not None else f"{user}@"
        host = f"[{self.host}]" if ":" in self.host else self.host
        query = []
        if self.prefix != DEFAULT_PREFIX:
            query.append(f"prefix={self.prefix}")
        if self.timeout != DEFAULT_TIMEOUT:
            query.append(f"timeout={self.timeout:g}")
        tail = f"?{'&'.join(query)}" if query else ""
        return f"{self.scheme}://{credentials}{host}:{self.port}/{self.db}{tail}"

    def __str__(self) -> str:
        return self.redacted

    def __repr__(self) -> str:
        return f"StoreURL({self.redacted!r})"


def redact(text: str) -> str:
    """`text` with whatever stands between `user:` and the last `@` masked: for URLs that
    failed to parse, which an error message still quotes (a password may hold `/`, `@`, `:`)."""
    at = text.rfind("@")
    if at < 0:
        return text
    scheme_end = text.find("//")
    start = scheme_end + 2 if 0 <= scheme_end < at else 0
    colon = text.find(":", start, at)
    return text if colon < 0 else f"{text[: colon + 1]}{_MASK}{text[at:]}"


def parse_store_url(text: str) -> StoreURL:
    """The store URL `text` stands for; ValueError saying what is wrong (never quoting the
    password: the URL is quoted as `redact` writes it)."""
    shown = redact(text)
    try:
        try:
            parts = urlsplit(text.strip())
        except ValueError:  # its message may quote any part of the text: say it in our words
            raise _Problem("not a URL") from None
        scheme = parts.scheme.lower()
        if scheme not in SCHEMES:
            raise _Problem("unknown scheme")
        if scheme == "memory":
            if parts.netloc or parts.path.strip("/") or parts.query:
                raise _Problem("memory:// takes nothing after it")
            return StoreURL("memory")
        host = parts.hostname or ""
        if not host:
            raise _Problem("no host")
        port = _port(parts)
        db = _db(parts.path)
        prefix, timeout = _query(parts.query)
    except _Problem as exc:
        raise ValueError(f"must be {URL_RULE} ({exc}), got {shown!r}") from None
    return StoreURL(
        scheme,
        host=host,
        port=port,
        db=db,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        prefix=prefix,
        timeout=timeout,
    )


class _Problem(ValueError):
    """What is wrong with a URL, in words that quote none of it but the database's name."""


def _port(parts: SplitResult) -> int:
    try:
        return parts.port or DEFAULT_PORT
    except ValueError:  # urllib's message quotes the port's text: part of a password, maybe
        raise _Problem("port must be a number 1-65535") from None


def _db(path: str) -> int:
    name = path.strip("/")
    if not name:
        return 0
    if not name.isdigit():
        raise _Problem("database must be a number")
    return int(name)


def _query(query: str) -> tuple[str, float]:
    prefix, timeout = DEFAULT_PREFIX, DEFAULT_TIMEOUT
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise _Problem("the query must be NAME=VALUE pairs joined by &") from None
    for name, value in pairs:
        if name == "prefix":
            if not _PREFIX.fullmatch(value):
                raise _Problem("prefix must be 1-64 characters of [A-Za-z0-9_.-]")
            prefix = value
        elif name == "timeout":
            try:
                timeout = float(value)
            except ValueError:
                timeout = math.nan
            if not (math.isfinite(timeout) and 0 < timeout <= 60):
                raise _Problem("timeout must be a number of seconds in (0, 60]")
        else:
            raise _Problem("unknown parameter (prefix and timeout are known)")
    return prefix, timeout


def check_store_url(text: str) -> str | None:
    """The setting's check: what is wrong with `text` as a store URL, or None."""
    try:
        parse_store_url(text)
    except ValueError as exc:
        return str(exc)
    return None


__all__ = [
    "DEFAULT_PREFIX",
    "DEFAULT_TIMEOUT",
    "SCHEMES",
    "URL_RULE",
    "StoreURL",
    "check_store_url",
    "parse_store_url",
    "redact",
]
