"""org.example.SanStorage.Job methods."""

from __future__ import annotations

from .. import errors
from ..jobs import JOB_I
from .context import daemon
from .tree import Call, method


async def _own_job(call: Call) -> bool:
    """Cancelling one's own job needs no authorization; another user's needs
    org.example.sanstorage.cancel-job-other-user (udisks' cancel-job / -other-user split)."""
    d = daemon()
    job = d.jobs.get(call.path)
    return await d.caller_uid(call.sender) == job.started_by_uid


@method(JOB_I, "Cancel", action="org.example.sanstorage.cancel-job-other-user", exempt=_own_job)
async def cancel(call: Call) -> None:
    job = daemon().jobs.get(call.path)
    if job.finished:
        raise errors.Failed("the job has already finished; nothing to cancel")
    if not job.cancelable:
        raise errors.NotSupported(f"a {job.operation} job cannot be cancelled")
    job.cancelled.set()
