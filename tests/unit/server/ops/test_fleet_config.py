"""What a fleet's store is told of the settings."""

from __future__ import annotations

from styletx_server.ops.config import ServerConfig
from styletx_server.ops.fleet import MIN_FLEET_TTL, shared_store, store_config


def test_the_store_gets_the_lease_attempts_ttl_and_each_tenants_result_bytes() -> None:
    config = ServerConfig(
        result_ttl=120, lease_seconds=7, max_attempts=4, max_stored_result_bytes=1000
    )
    told = store_config(config)
    assert (told.result_ttl, told.lease_seconds, told.max_attempts) == (120, 7, 4)
    assert told.tenant_result_bytes == 1000


def test_a_fleet_keeps_an_ended_job_long_enough_for_its_callers_elsewhere() -> None:
    # With --result-ttl 0 a replica on its own still streams the outcome it holds; a fleet's
    # callers read it from the store, so it stays there a few seconds at least.
    assert store_config(ServerConfig(result_ttl=0)).result_ttl == MIN_FLEET_TTL > 0


def test_memory_means_no_shared_store() -> None:
    assert shared_store(ServerConfig(store="memory://")) is None
    assert shared_store(ServerConfig(store="redis://127.0.0.1:1/0")) is not None
