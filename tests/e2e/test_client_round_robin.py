"""Round-robin balancing over three real `styletx-server` replicas on loopback.

Evidence comes from each replica's own /metrics (styletx_requests_total{method=~Stylize,code=OK}):
keyed calls from one SDK client land on every replica (gRPC's round_robin; the SDK steers no key).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from styletx_client import StyleTransferClient
from tests.support.server_process import ServerProcess, launch, png, wait_ready

CALLS = 12


@pytest.mark.slow
def test_keyed_calls_spread_over_all_three_replicas(seeded_weights: Path) -> None:
    replicas: list[ServerProcess] = [launch(seeded_weights) for _ in range(3)]
    try:
        wait_ready(replicas)
        target = ",".join(r.address for r in replicas)
        content, style = png(40, 30, 1), png(24, 24, 2)
        with StyleTransferClient(target, timeout=120) as client:
            assert client.target.startswith("ipv4:")
            for i in range(CALLS):
                client.stylize(content, style, request_key=f"e2e-{i}", size=32, max_evaluations=3)
        counts = [r.stylize_requests("OK") for r in replicas]
    finally:
        for replica in replicas:
            replica.stop()
    print(f"Stylize calls per replica (from /metrics): {counts}")
    # Round robin over ready replicas: every one takes a share once all three are connected.
    assert sum(counts) == CALLS and min(counts) >= 2, counts
