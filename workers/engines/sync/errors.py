"""What can go wrong with a sync, as exception types (every one carries the report when there is one)."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .back import SyncReport
    from .live import LiveSyncReport
    from .rollback import RollbackReport


class SyncError(Exception):
    """A sync did not complete. ``report`` (when set) says which files got where."""

    def __init__(self, message: str, report: "SyncReport | LiveSyncReport | RollbackReport | None" = None) -> None:
        super().__init__(message)
        self.report = report


class PlanError(SyncError):
    """The selection or the manifests cannot make a safe plan."""


class UnsafePath(PlanError):
    pass


class SyncRefused(SyncError):
    """The plan has drift-guard conflicts nobody overrode."""


class ConnectionLost(SyncError):
    pass


class RollbackError(SyncError):
    pass


class SyncCancelled(SyncError):
    """Cancelled by a person: the agents were stopped on their hosts at a safe point; the report
    says which files were done (each target is whole: its original or the clone's version)."""
