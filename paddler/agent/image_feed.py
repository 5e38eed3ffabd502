"""Images in slots: where a reused prefix may end, and decoding the images a step reaches."""

from __future__ import annotations

from typing import Any

from paddler.agent.generation_job import GenerationJob
from paddler.agent.projector import Projector
from paddler.agent.slot import Slot


def whole_images(job: GenerationJob, reused: int) -> int:
    """``reused`` moved back to the start of the image it ends inside of, if it does: an image
    is decoded whole or not at all."""
    prompt = job.prompt_tokens
    while 0 < reused < len(prompt) and prompt[reused] < 0 and reused not in job.images:
        reused -= 1
    return reused


def decode_images(
    projector: Projector | None, context: Any, slots: list[Slot], batch_size: int
) -> list[tuple[Slot, Exception]]:
    """Decode the image each busy slot's prompt has reached (its next pending position is an
    image's first placeholder), each in a call of its own; return the slots that failed."""
    failed: list[tuple[Slot, Exception]] = []
    for slot in slots:
        job = slot.job
        if job is None or not slot.pending or slot.pending[0] >= 0:
            continue
        image = job.images.get(len(slot.cached))
        if projector is None or image is None:
            failed.append((slot, RuntimeError("an image's place in the prompt has no image")))
            continue
        try:
            projector.decode(context, image, len(slot.cached), slot.seq_id, batch_size)
        except Exception as error:  # noqa: BLE001 - that request fails alone (its status kept)
            failed.append((slot, error))
            continue
        slot.cached.extend(slot.pending[: image.positions])
        del slot.pending[: image.positions]
    return failed
