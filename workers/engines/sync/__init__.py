"""Sync back (copy the repaired files from the clone to production, safely), rollback, and live catch-up.

One module per concern:

``plan``      the preview a person approves (``plan_sync``, ``SyncPlan``), path and run-id checks
``agents``    the sync agents over SSH and the worker's relay between them
``back``      ``sync_back``: applying an approved plan, the journal mirror
``rollback``  ``rollback``: restoring the originals a run replaced
``live``      ``live_sync_files`` and ``live_sync_vendor``
``errors``    the exception types

No Django or Celery: engines report through an ``Emitter``.
"""
from __future__ import annotations

from .agents import DEFAULT_TRANSPORT, start_agent
from .back import Journal, MemoryJournal, SyncReport, sync_back
from .errors import ConnectionLost, PlanError, RollbackError, SyncCancelled, SyncError, SyncRefused, UnsafePath
from .live import LivePass, LiveSyncReport, VendorCatchupReport, live_sync_files, live_sync_vendor
from .plan import BLOCK, RUN_ID_RE, PlanFile, SyncPlan, check_abs, check_rel, check_run_id, plan_sync
from .rollback import FileOutcome, RollbackReport, backed_up_files, rollback

__all__ = [
    "DEFAULT_TRANSPORT", "start_agent",
    "Journal", "MemoryJournal", "SyncReport", "sync_back",
    "ConnectionLost", "PlanError", "RollbackError", "SyncCancelled", "SyncError", "SyncRefused", "UnsafePath",
    "LivePass", "LiveSyncReport", "VendorCatchupReport", "live_sync_files", "live_sync_vendor",
    "BLOCK", "RUN_ID_RE", "PlanFile", "SyncPlan", "check_abs", "check_rel", "check_run_id", "plan_sync",
    "FileOutcome", "RollbackReport", "backed_up_files", "rollback",
]
