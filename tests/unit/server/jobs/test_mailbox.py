"""The subscriber mailbox: bounded, coalescing, never blocking the putter."""

from __future__ import annotations

import asyncio
import threading

from styletx_api.v1 import style_transfer_pb2 as pb
from styletx_server.errors import statuses
from styletx_server.jobs.mailbox import Final, Item, Mailbox


def queued(position: int) -> pb.StylizeResponse:
    return pb.StylizeResponse(queued=pb.QueuedEvent(position=position))


def progress(iteration: int, preview: bool = False) -> pb.StylizeResponse:
    event = pb.ProgressEvent(iteration=iteration, evaluations=iteration)
    if preview:
        event.preview.data = b"x" * 1000
    return pb.StylizeResponse(progress=event)


def drain(mailbox: Mailbox) -> list[Item]:
    async def read() -> list[Item]:
        items: list[Item] = []
        while mailbox.pending():
            items.append(await mailbox.get())
        return items

    return asyncio.run(read())


def test_a_reader_that_keeps_up_sees_every_event_in_order() -> None:
    loop = asyncio.new_event_loop()
    box = Mailbox(loop, progress_slots=4)
    for item in (queued(1), pb.StylizeResponse(started=pb.StartedEvent()), progress(1)):
        box.put(item)
    assert [i.WhichOneof("event") for i in drain(box)] == ["queued", "started", "progress"]  # type: ignore[union-attr]
    assert box.coalesced == 0
    loop.close()


def test_latest_progress_replaces_older_progress_beyond_the_slots() -> None:
    box = Mailbox(asyncio.new_event_loop(), progress_slots=3)
    for i in range(1, 101):
        box.put(progress(i))
    items = drain(box)
    assert [i.progress.iteration for i in items] == [1, 2, 100]  # type: ignore[union-attr]
    assert box.coalesced == 97


def test_positions_coalesce_to_the_latest() -> None:
    box = Mailbox(asyncio.new_event_loop())
    for position in (5, 4, 3):
        box.put(queued(position))
    assert [i.queued.position for i in drain(box)] == [3]  # type: ignore[union-attr]


def test_only_the_newest_pending_progress_keeps_its_preview() -> None:
    box = Mailbox(asyncio.new_event_loop())
    for i in range(1, 5):
        box.put(progress(i, preview=True))
    items = drain(box)
    assert [i.progress.HasField("preview") for i in items] == [False, False, False, True]  # type: ignore[union-attr]


def test_a_final_event_drops_positions_and_previews_and_ends_the_mailbox() -> None:
    box = Mailbox(asyncio.new_event_loop())
    box.put(queued(2))
    box.put(progress(1, preview=True))
    result = Final(response=pb.StylizeResponse(result=pb.ResultEvent(iterations=1)))
    box.put(result)
    box.put(progress(2))  # after the end: ignored
    items = drain(box)
    assert len(items) == 2
    assert isinstance(items[0], pb.StylizeResponse) and not items[0].progress.HasField("preview")
    assert items[1] is result


def test_get_waits_for_a_put_from_another_thread() -> None:
    async def scenario() -> Item:
        box = Mailbox(asyncio.get_running_loop())
        final = Final(status=statuses.draining())
        threading.Timer(0.05, box.put, args=(final,)).start()
        return await asyncio.wait_for(box.get(), timeout=10)

    item = asyncio.run(scenario())
    assert isinstance(item, Final) and item.status is not None
