"""org.example.SanStorage.Job: cancel a job."""

from __future__ import annotations

from .. import errors
from ..authz.polkit import PolkitAuthorizer
from ..authz.registry import Call, method
from ..ops.jobs import Job, Jobs
from ..publish import paths
from ..publish.render import JOB_I


class JobApi:
    def __init__(self, jobs: Jobs, authorizer: PolkitAuthorizer) -> None:
        self.jobs = jobs
        self.authorizer = authorizer

    def _job(self, call: Call) -> Job:
        parsed = paths.parse(call.path)
        if parsed is None or parsed[0] != "job":
            raise errors.NotFound(f"no job at {call.path}")
        return self.jobs.get(parsed[1])  # type: ignore[arg-type]

    async def own_job(self, call: Call) -> bool:
        """Cancelling one's own job needs no authorization; another user's needs
        org.example.sanstorage.cancel-job-other-user (udisks' cancel-job / -other-user split)."""
        return await self.authorizer.uid_of(call) == self._job(call).started_by_uid

    @method(JOB_I, "Cancel", action="org.example.sanstorage.cancel-job-other-user",
            exempt="own_job")
    async def cancel(self, call: Call) -> None:
        self.jobs.cancel(self._job(call))
