"""Jobs: long operations block their caller *and* are published while they run (the udisks model).

`busctl --timeout=…` gets a plain answer; a GUI watches /org/example/SanStorage/jobs/N for Progress
and can Cancel. A finished job stays readable for a grace period, so a client that looks late
still sees how it ended (Finished, Success, Message).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field

from . import errors, paths
from .service.tree import ObjectTree

JOB_I = "org.example.SanStorage.Job"
DEFAULT_GRACE = 60.0


@dataclass(eq=False)
class Job:
    number: int
    operation: str
    objects: list[str]
    started_by_uid: int
    cancelable: bool = True
    start_time: int = field(default_factory=lambda: int(time.time() * 1_000_000))
    progress: float = 0.0
    finished: bool = False
    success: bool = False
    message: str = ""
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def path(self) -> str:
        return paths.job(self.number)


class Jobs:
    def __init__(self, tree: ObjectTree, grace: float = DEFAULT_GRACE) -> None:
        self.tree = tree
        self.grace = grace
        self.jobs: dict[int, Job] = {}
        self._numbers = itertools.count(1)

    def start(self, operation: str, objects: list[str], uid: int,
              cancelable: bool = True) -> Job:
        job = Job(next(self._numbers), operation, list(objects), uid, cancelable)
        self.jobs[job.number] = job
        self._publish(job)
        return job

    def _publish(self, job: Job) -> None:
        self.tree.apply({job.path: {JOB_I: {
            "Operation": job.operation, "Progress": float(job.progress),
            "Objects": job.objects, "StartedByUID": job.started_by_uid,
            "Cancelable": job.cancelable and not job.finished, "StartTime": job.start_time,
            "Finished": job.finished, "Success": job.success, "Message": job.message}}})

    def progress(self, job: Job, value: float) -> None:
        job.progress = max(0.0, min(1.0, value))
        self._publish(job)

    def finish(self, job: Job, success: bool, message: str) -> None:
        if job.finished:
            return
        job.finished, job.success, job.message = True, success, message
        if success:
            job.progress = 1.0
        self._publish(job)
        self.tree.emit(job.path, JOB_I, "Completed", "bs", [success, message])
        asyncio.get_running_loop().call_later(self.grace, self._drop, job.number)

    def _drop(self, number: int) -> None:
        job = self.jobs.pop(number, None)
        if job is not None:
            self.tree.apply({job.path: None})

    def get(self, path: str) -> Job:
        parsed = paths.parse(path)
        job = self.jobs.get(parsed[1]) if parsed and parsed[0] == "job" else None  # type: ignore[arg-type]
        if job is None:
            raise errors.NotFound(f"no job at {path}")
        return job
