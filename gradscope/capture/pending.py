"""Recorded steps on their way to the host: the GPU's queued copies, written once they landed.

On a GPU waiting for a recorded step's one device-to-host copy would stall the training thread
until the GPU has caught up with everything the CPU queued. So the copy is queued non-blocking
into page-locked memory (`StepAccumulator.flush_later`), and the step reaches the record at a
later step end, once the copy has landed, or when the record is read or the watch detached
(`write(wait=True)`). Steps are written in step order; past `MAX_PENDING` the oldest is waited
for, so a GPU far behind cannot pile up buffers. On a CPU nothing is deferred: the copy costs
nothing to wait for.
"""

from __future__ import annotations

from collections import deque
from typing import Iterator, NamedTuple, Optional, Union

from ..measure import HostBuffers, PendingValues, StepAccumulator
from ..model_tree import WatchedModule
from ..record import RunRecord
from ..store import StoreWriter
from . import meta

# Recorded steps whose copy may still be on its way; past this many the oldest is waited for.
MAX_PENDING = 8


class PendingStep(NamedTuple):
    copy: PendingValues
    entries: list[WatchedModule]  # the record entries as of the step (functional ones appear later)
    step: int
    skipped: bool
    interval: Optional[int]  # budget=: the recording interval when the step was recorded


class PendingSteps:
    """The queue of recorded steps whose copy was queued, and the host buffers they land in."""

    def __init__(self) -> None:
        self.buffers = HostBuffers()  # reused page-locked buffers (also for other non-blocking reads)
        self.written = 0  # steps written into the record so far
        self._queue: deque[PendingStep] = deque()

    def __len__(self) -> int:
        return len(self._queue)

    def __iter__(self) -> Iterator[PendingStep]:
        return iter(self._queue)

    @staticmethod
    def defers(accumulator: StepAccumulator, combines_ranks: bool, forced: Optional[bool] = None) -> bool:
        """Queue this step's copy instead of waiting for it? Where waiting would stall the CPU
        (values on a CUDA device), for one process only: combining ranks is a collective, which
        waits anyway. `forced` runs either path anywhere (the tests run the GPU's on a CPU)."""
        if combines_ranks:
            return False
        if forced is not None:
            return forced
        first = accumulator.queued[:1] or [values for _, values in accumulator.queued_vectors[:1]]
        return bool(first) and first[0].is_cuda

    def add(
        self,
        accumulator: StepAccumulator,
        entries: list[WatchedModule],
        step: int,
        skipped: bool,
        interval: Optional[int],
    ) -> None:
        """Queue the window's copy; no device tensor of it is kept."""
        self._queue.append(PendingStep(accumulator.flush_later(self.buffers), entries, step, skipped, interval))

    def write(self, record: Union[RunRecord, StoreWriter], wait: bool) -> None:
        """Write the steps whose copy has landed into `record`, in step order; with `wait`, all of them."""
        queue = self._queue
        while queue and (wait or len(queue) >= MAX_PENDING or queue[0].copy.ready()):
            pending = queue.popleft()  # first: a step whose writing fails is not tried again
            values = pending.copy.values()
            meta.write_step(record, pending.entries, pending.step, values, pending.skipped, pending.interval)
            self.written += 1
