"""The running daemon, for method handlers (set once at start-up, before the name is owned)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..daemon import Daemon

_daemon: "Daemon | None" = None


def set_daemon(d: "Daemon") -> None:
    global _daemon
    _daemon = d


def daemon() -> "Daemon":
    assert _daemon is not None, "handlers run only after start-up"
    return _daemon
