"""`--store` URLs: what each form means, what is refused, and that no text made from one (its
str, repr, redacted form, an error, the setting's refusal) ever carries the password."""

from __future__ import annotations

import pytest

from styletx_server.ops.settings import ServerConfig
from styletx_server.store import open_store
from styletx_server.store.memory import MemoryStore
from styletx_server.store.protocol import StoreConfig
from styletx_server.store.redis_store import RedisStore
from styletx_server.store.url import StoreURL, check_store_url, parse_store_url, redact

SECRET = "s3cr/et@:pw"
ENCODED = "s3cr%2Fet%40%3Apw"


def test_memory_is_the_default_and_takes_nothing_after_it() -> None:
    assert ServerConfig().store == "memory://"
    url = parse_store_url("memory://")
    assert url.is_memory and url.redacted == "memory://"
    assert isinstance(open_store("memory://"), MemoryStore)
    for bad in ("memory://x", "memory:///1", "memory://?prefix=a"):
        with pytest.raises(ValueError, match="memory:// takes nothing"):
            parse_store_url(bad)


def test_redis_urls_with_their_defaults() -> None:
    url = parse_store_url("redis://cache.internal")
    assert (url.scheme, url.host, url.port, url.db) == ("redis", "cache.internal", 6379, 0)
    assert (url.username, url.password, url.prefix, url.timeout) == (None, None, "styletx", 2.0)
    assert not url.tls and url.redacted == "redis://cache.internal:6379/0"
    full = parse_store_url(f"rediss://styletx:{ENCODED}@[::1]:6380/3?prefix=blue&timeout=0.5")
    assert full.tls and (full.host, full.port, full.db) == ("::1", 6380, 3)
    assert (full.username, full.password) == ("styletx", SECRET)
    assert (full.prefix, full.timeout) == ("blue", 0.5)
    assert full.redacted == "rediss://styletx:***@[::1]:6380/3?prefix=blue&timeout=0.5"
    assert parse_store_url("redis://:pw@h").redacted == "redis://:***@h:6379/0"
    store = open_store(full, StoreConfig(result_ttl=5))
    assert isinstance(store, RedisStore) and store.config == StoreConfig(result_ttl=5, timeout=0.5)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("http://host", "unknown scheme"),
        ("redis://", "no host"),
        ("redis://host:99999", "port must be a number"),
        ("redis://host/zero", "database must be a number"),
        ("redis://host/0?prefix=a{b}", "prefix must be"),
        ("redis://host/0?timeout=0", "timeout must be"),
        ("redis://host/0?pool=3", "unknown parameter"),
    ],
)
def test_bad_urls_are_refused_saying_why(text: str, why: str) -> None:
    with pytest.raises(ValueError, match="must be memory:// or redis") as caught:
        parse_store_url(text)
    assert why in str(caught.value)


@pytest.mark.parametrize(
    "text",
    [
        f"redis://user:{ENCODED}@host:6379/0",
        f"redis://:{SECRET}@host:6379/0",  # unencoded: fails to parse, still never shown
        f"redis://user:{SECRET}@host:notaport/0",
        f"user:{SECRET}@host",
    ],
)
def test_the_password_never_appears_in_any_text(text: str) -> None:
    shown = [redact(text)]
    try:
        url = parse_store_url(text)
    except ValueError as exc:
        shown.append(str(exc))
        problem = check_store_url(text)
        assert problem is not None
        shown.append(problem)
        with pytest.raises(ValueError) as caught:
            ServerConfig(store=text)
        shown.append(str(caught.value))
        assert "--store" in shown[-1]
    else:
        shown += [str(url), repr(url), url.redacted, repr(open_store(url)), str(open_store(url))]
        assert url.password == SECRET
        assert ServerConfig(store=text).store == text
    for line in shown:
        assert "s3cr" not in line and "pw" not in line, line
        assert "***" in line or "user" not in line, line


def test_a_url_parsed_is_equal_to_the_same_url_and_hides_the_password_in_its_repr() -> None:
    url = parse_store_url("redis://:hunter2@h/1")
    assert url == StoreURL("redis", host="h", db=1, password="hunter2")
    assert "hunter2" not in repr(url) and "hunter2" not in f"{url}"
