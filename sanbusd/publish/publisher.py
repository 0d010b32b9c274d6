"""Inventory -> D-Bus objects. Renders records into property dicts and keeps the tree in step.

One path for everything: the first publication is the change from an empty inventory. Only the
objects of records that changed, and the objects that show something of them (a host lists its
LUNs, a LUN names its map), are rendered again; the tree compares and signals.
"""

from __future__ import annotations

from typing import Any

from ..kinds import KIND_TABLE
from ..model.records import KINDS, Diff, Inventory
from ..ops.jobs import Job
from ..bus.tree import ObjectTree
from . import paths
from .render import JOB_I, Hints, Objects, RenderContext, render_job, render_manager


class Publisher:
    def __init__(self, tree: ObjectTree, backend_name: str) -> None:
        self.tree = tree
        self.backend_name = backend_name
        self._paths: dict[tuple[str, Any], str] = {}     # (kind, key) -> its object's path

    def publish(self, old: Inventory, new: Inventory, d: Diff, hints: Hints,
                first: bool = False) -> None:
        """Publish what `d` says changed from `old` to `new`."""
        again: dict[str, set] = {k: d.touched(k) for k in KINDS}
        ctx = RenderContext(new, hints)
        both = (RenderContext(old, hints), ctx)     # indexes are built once, when first used
        for kind in KIND_TABLE:
            for key in d.touched(kind.name):
                for c in both:
                    rec = getattr(c.inv, kind.name).get(key)
                    if rec is not None:
                        for other, keys in kind.shown_by(c, rec).items():
                            again[other] |= keys
        updates: dict[str, Objects | None] = {}
        if first:
            updates[paths.MANAGER] = render_manager(self.backend_name, hints)
        gone: list[str] = []
        for kind in KIND_TABLE:
            records = getattr(new, kind.name)
            for key in again[kind.name]:
                rec = records.get(key)
                path = kind.path(rec) if rec is not None else None
                old_path = self._paths.pop((kind.name, key), None)
                if path is not None:
                    self._paths[(kind.name, key)] = path
                    updates[path] = kind.render(ctx, rec)
                if old_path is not None and old_path != path:
                    gone.append(old_path)
        for path in gone:
            updates.setdefault(path, None)
        self.tree.apply(updates)

    def publish_manager(self, hints: Hints) -> None:
        self.tree.apply({paths.MANAGER: render_manager(self.backend_name, hints)})

    # -- jobs ---------------------------------------------------------------------------------

    def job_changed(self, job: Job) -> None:
        self.tree.apply({paths.job(job.number): render_job(job)})

    def job_completed(self, job: Job) -> None:
        self.tree.emit(paths.job(job.number), JOB_I, "Completed", "bs", [job.success, job.message])

    def job_dropped(self, job: Job) -> None:
        self.tree.apply({paths.job(job.number): None})
