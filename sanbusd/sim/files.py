"""The simulated sysfs tree on disk: attribute files, class links and device directories, named
relative to the tree's root (which plays /sys).

The reader (backend/sysfs.py) and lsscsi read this tree as they read the real one, so links are
relative (the tree can be moved or bind-mounted) and write-only attributes exist with mode 0200,
as the kernel's do.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..backend.uevent import UEvent


def uevent(action: str, subsystem: str, rel: str, devtype: str = "", **props: str) -> UEvent:
    """The uevent the kernel sends for the device at `rel` (a devpath below the root)."""
    return UEvent(action, subsystem, "/" + rel, devtype, dict(props))


class SysfsFiles:
    def __init__(self, root: str | os.PathLike) -> None:
        self.root = str(root)

    def path(self, rel: str) -> str:
        return os.path.join(self.root, rel)

    def mkdir(self, rel: str) -> None:
        os.makedirs(self.path(rel), exist_ok=True)

    def attrs(self, rel: str, attrs: dict[str, str], writable: tuple[str, ...] = ()) -> None:
        d = self.path(rel)
        os.makedirs(d, exist_ok=True)
        for k, v in attrs.items():
            with open(os.path.join(d, k), "w") as f:
                f.write(v + "\n")
        for k in writable:
            fd = os.open(os.path.join(d, k), os.O_CREAT | os.O_WRONLY, 0o200)
            os.close(fd)

    def set(self, rel: str, attr: str, value: str) -> None:
        with open(self.path(os.path.join(rel, attr)), "w") as f:
            f.write(value + "\n")

    def get(self, rel: str, attr: str) -> str:
        """An attribute's value, "" when the device is not there."""
        try:
            with open(self.path(os.path.join(rel, attr))) as f:
                return f.read().strip()
        except OSError:
            return ""

    def link(self, link_rel: str, target_rel: str) -> None:
        link = self.path(link_rel)
        os.makedirs(os.path.dirname(link), exist_ok=True)
        rel = os.path.relpath(self.path(target_rel), os.path.dirname(link))
        try:
            os.symlink(rel, link)
        except FileExistsError:
            os.unlink(link)
            os.symlink(rel, link)

    def unlink(self, link_rel: str) -> None:
        try:
            os.unlink(self.path(link_rel))
        except FileNotFoundError:
            pass

    def lexists(self, rel: str) -> bool:
        return os.path.lexists(self.path(rel))

    def isdir(self, rel: str) -> bool:
        return os.path.isdir(self.path(rel))

    def rmtree(self, rel: str) -> None:
        shutil.rmtree(self.path(rel), ignore_errors=True)

    def devpath(self, rel: str) -> str:
        """Where a class link such as class/fc_remote_ports/rport-1:0-0 points: the devpath its
        uevents carry."""
        return os.path.relpath(os.path.realpath(self.path(rel)), self.root)

    def class_dev(self, devdir: str, cls: str, name: str, attrs: dict[str, str],
                  writable: tuple[str, ...] = ()) -> str:
        """A class device under `devdir`, linked from class/<cls>/<name> with a `device` link."""
        rel = f"{devdir}/{cls}/{name}"
        self.attrs(rel, attrs, writable)
        self.link(f"{rel}/device", devdir)
        self.link(f"class/{cls}/{name}", rel)
        return rel

    def wipe(self) -> None:
        root = Path(self.root)
        if root.exists():
            shutil.rmtree(root)
