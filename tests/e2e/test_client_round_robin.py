"""Key-affine balancing over three real `styletx-server` replicas on loopback.

Evidence comes from each replica's own /metrics (styletx_requests_total{method=~Stylize,code=OK}):
three keys homed on each replica (by the SDK's rendezvous ranking) give exactly 3/3/3 calls.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from styletx_client import StyleTransferClient
from styletx_client._routing import rendezvous_rank
from tests.support.server_process import ServerProcess, launch, png, wait_ready

PER_REPLICA = 3


def keys_homed_on(addresses: list[str], per_replica: int) -> list[str]:
    """`per_replica` request keys whose rendezvous home is each address, in turn."""
    chosen: dict[str, list[str]] = {address: [] for address in addresses}
    candidate = 0
    while any(len(keys) < per_replica for keys in chosen.values()):
        key = f"e2e-{candidate}"
        candidate += 1
        home = rendezvous_rank(key, addresses)[0]
        if len(chosen[home]) < per_replica:
            chosen[home].append(key)
    return [key for keys in zip(*chosen.values(), strict=True) for key in keys]


@pytest.mark.slow
def test_calls_spread_over_all_three_replicas_by_key(seeded_weights: Path) -> None:
    replicas: list[ServerProcess] = [launch(seeded_weights) for _ in range(3)]
    try:
        wait_ready(replicas)
        target = ",".join(r.address for r in replicas)
        content, style = png(40, 30, 1), png(24, 24, 2)
        keys = keys_homed_on([r.address for r in replicas], PER_REPLICA)
        with StyleTransferClient(target, timeout=120) as client:
            assert client.target.startswith("ipv4:")
            for key in keys:
                client.stylize(content, style, request_key=key, size=32, max_evaluations=3)
        counts = [r.stylize_requests("OK") for r in replicas]
    finally:
        for replica in replicas:
            replica.stop()
    print(f"Stylize calls per replica (from /metrics): {counts}")
    assert counts == [PER_REPLICA] * 3, counts
