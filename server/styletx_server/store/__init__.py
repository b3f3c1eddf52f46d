"""What must outlive a replica: job records by key, the fair queue, leases, events, results,
cancel requests and tenant counters, behind one protocol (`protocol.JobStore`), held in this
process (`memory`, the default) or in Redis (`redis_store`), chosen by a URL (`url`, `--store`).
Imports only `errors` and `observe`; `jobs`, `rpc` and `ops` may import it."""

from __future__ import annotations

from dataclasses import replace

from styletx_server.store.protocol import JobStore, StoreConfig
from styletx_server.store.url import StoreURL, parse_store_url


def open_store(url: StoreURL | str, config: StoreConfig | None = None) -> JobStore:
    """The store `url` names (a `StoreURL` or its text), told `config`; a Redis store's calls
    are bounded by the URL's `timeout` (default 2 s)."""
    parsed = parse_store_url(url) if isinstance(url, str) else url
    if parsed.is_memory:
        from styletx_server.store.memory import MemoryStore

        return MemoryStore(config)
    from styletx_server.store.redis_store import RedisStore

    return RedisStore(parsed, replace(config or StoreConfig(), timeout=parsed.timeout))


__all__ = ["open_store"]
