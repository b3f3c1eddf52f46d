"""What only the in-process store promises: one lock makes each call one step for threads too
(the server's workers are threads), not only for asyncio tasks."""

from __future__ import annotations

import asyncio
import threading

from styletx_server.store.memory import MemoryStore
from styletx_server.store.protocol import AdmitRequest, JobState, Outcome


def test_threads_claiming_and_completing_at_once_take_each_job_once() -> None:
    store = MemoryStore()
    for n in range(200):
        asyncio.run(store.admit(AdmitRequest(f"t{n % 5}", f"k{n}", b"d", capacity=1000)))
    taken: list[list[str]] = [[] for _ in range(8)]

    def work(mine: list[str]) -> None:
        async def loop() -> None:
            while claims := await store.claim(f"r{id(mine)}", 3):
                for claim in claims:
                    mine.append(claim.record.job_id)
                    await store.append(claim.lease, "progress", b"")
                    await store.complete(claim.lease, Outcome(JobState.DONE, result=b"x"))

        asyncio.run(loop())

    threads = [threading.Thread(target=work, args=(mine,)) for mine in taken]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    every = [job for mine in taken for job in mine]
    assert len(every) == len(set(every)) == 200
    counts = asyncio.run(store.counts())
    assert (counts.queued, counts.running) == (0, 0)
    assert sum(t.result_bytes for t in counts.tenants.values()) == 200
