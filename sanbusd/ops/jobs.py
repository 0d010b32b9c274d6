"""Jobs: long operations block their caller *and* are visible while they run (the udisks model).

`busctl --timeout=…` gets a plain answer; a GUI watches the job for Progress and can Cancel. A
finished job stays readable for a grace period, so a client that looks late still sees how it
ended (Finished, Success, Message). Jobs know nothing of D-Bus: whoever shows them (the
publisher) is told through `on_change`, `on_completed` and `on_drop`.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import Callable

from .. import errors

ObjectRef = tuple[str, object]      # ("host", 3), ("lun", HCTL(...)): what a job works on


@dataclass(eq=False)
class Job:
    number: int
    operation: str
    objects: list[ObjectRef]
    started_by_uid: int
    cancelable: bool = True
    start_time: int = field(default_factory=lambda: int(time.time() * 1_000_000))
    progress: float = 0.0
    finished: bool = False
    success: bool = False
    message: str = ""
    finished_at: float = 0.0            # wall clock (s) when it finished: its retention runs
                                        # from here, also across an idle exit
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)


def _nothing(*_args) -> None:
    pass


class Jobs:
    def __init__(self, grace: float,
                 on_change: Callable[[Job], None] = _nothing,
                 on_completed: Callable[[Job], None] = _nothing,
                 on_drop: Callable[[Job], None] = _nothing) -> None:
        self.grace = grace
        self.jobs: dict[int, Job] = {}
        self._numbers = itertools.count(1)
        self.on_change, self.on_completed, self.on_drop = on_change, on_completed, on_drop

    def start(self, operation: str, objects: list[ObjectRef], uid: int,
              cancelable: bool = True) -> Job:
        job = Job(next(self._numbers), operation, list(objects), uid, cancelable)
        self.jobs[job.number] = job
        self.on_change(job)
        return job

    def progress(self, job: Job, value: float) -> None:
        job.progress = max(0.0, min(1.0, value))
        self.on_change(job)

    def finish(self, job: Job, success: bool, message: str) -> None:
        if job.finished:
            return
        job.finished, job.success, job.message = True, success, message
        job.finished_at = time.time()
        if success:
            job.progress = 1.0
        self.on_change(job)
        self.on_completed(job)
        asyncio.get_running_loop().call_later(self.grace, self._drop, job.number)

    @property
    def running(self) -> int:
        """How many jobs have not finished."""
        return sum(not j.finished for j in self.jobs.values())

    def next_number(self) -> int:
        """The number the next job will get (numbers are never reused within a boot)."""
        n = next(self._numbers)
        self._numbers = itertools.count(n)
        return n

    def restore(self, finished: list[Job], next_number: int) -> list[Job]:
        """Finished jobs kept across an idle exit, each for what is left of its retention (from
        its finish time; a clock set back keeps it at most `grace` more): those still in it are
        back, the others are not. Numbering goes on from `next_number`."""
        now = time.time()
        back = []
        for job in finished:
            left = min(self.grace, job.finished_at + self.grace - now)
            if not job.finished or left <= 0 or job.number in self.jobs:
                continue
            self.jobs[job.number] = job
            self.on_change(job)
            asyncio.get_running_loop().call_later(left, self._drop, job.number)
            back.append(job)
        highest = max([next_number - 1, *self.jobs], default=0)
        self._numbers = itertools.count(max(highest + 1, self.next_number()))
        return back

    def _drop(self, number: int) -> None:
        job = self.jobs.pop(number, None)
        if job is not None:
            self.on_drop(job)

    def get(self, number: int) -> Job:
        job = self.jobs.get(number)
        if job is None:
            raise errors.NotFound(f"no job {number}")
        return job

    def cancel(self, job: Job) -> None:
        if job.finished:
            raise errors.Failed("the job has already finished; nothing to cancel")
        if not job.cancelable:
            raise errors.NotSupported(f"a {job.operation} job cannot be cancelled")
        job.cancelled.set()
