"""The seed runbook: the eleven steps of a partial-failure repair (one service
down, some datafiles corrupted, the server stays in production), with default
commands for the demo production host's database, minidb. docs/steps.md documents
each step kind."""
from __future__ import annotations

from .kinds import registry

SEED_NAME = "Partial failure: rebuild the database on a clone, sync back only the fix"
SEED_DESCRIPTION = (
    "One service is down and some datafiles are corrupted; the server stays in production. "
    "Clone it live into a VM, restore the latest backup and run the vendor's re-initialization "
    "there, find the datafiles that are really corrupted, sync only those back after a second "
    "person approves, catch up to the latest production data, re-check, and re-enable the service."
)
DATA = "/var/lib/minidb/data"
BACKUP = "/var/backups/minidb/latest.tar.gz"

SEED_CHECK_SETS: dict[str, list[dict]] = {
    "database healthy": [
        {"type": "command", "name": "every datafile passes dbverify", "command": f"dbverify {DATA}/*.dbf"},
    ],
}

SEED_STEPS: list[dict] = [
    {"kind": "command", "target": "production", "title": "Disable the broken service (the server stays in production)",
     "params": {"command": "minidb-service disable && minidb-service status", "expect_exit": 3, "timeout": 60},
     "estimated_seconds": 30, "milestone": "service_disabled"},
    {"kind": "clone", "target": "production", "title": "Clone the live server into an isolated VM (P2V, no downtime)",
     "params": {"pre_command": "sync", "exclude": ["/var/cache"], "disable_services": ["minidb-load"]},
     "estimated_seconds": 1800, "milestone": "clone_ready"},
    {"kind": "import_backup", "target": "clone", "title": "Import the latest backup into the clone",
     "params": {"source": "production", "archive_path": BACKUP, "dest_path": BACKUP},
     "estimated_seconds": 600},
    {"kind": "command", "target": "clone", "title": "Run the vendor's re-initialization procedure on the clone",
     "params": {"command": f"minidb-service stop && minidb-reinit --from {BACKUP}", "timeout": 4 * 3600},
     "estimated_seconds": 7200},
    {"kind": "check", "target": "clone", "title": "Acceptance checks on the clone",
     "params": {"check_set": "database healthy", "checks": [
         {"type": "command", "name": "the service starts",
          "command": "minidb-service enable && minidb-service start && minidb-service status"},
     ]},
     "estimated_seconds": 300, "milestone": "repair_verified"},
    {"kind": "diff", "target": "clone", "title": "Find the datafiles that are really corrupted on production",
     "params": {"paths": [DATA], "verify_command": "dbverify {path}"},
     "estimated_seconds": 600},
    {"kind": "sync_back", "target": "production", "title": "Sync the repaired datafiles back to production",
     "needs_approval": True, "params": {"selection": "selected"},
     "estimated_seconds": 300, "milestone": "synced_back"},
    {"kind": "live_sync", "target": "production", "title": "Catch up to the latest production data (live)",
     "params": {"mode": "vendor", "command": "minidb-replay", "lag_pattern": r"lag_lsn=(?P<lag>\d+)"},
     "estimated_seconds": 1800, "milestone": "caught_up"},
    {"kind": "check", "target": "production", "title": "Re-check production",
     "params": {"check_set": "database healthy"},
     "estimated_seconds": 300},
    {"kind": "manual", "target": "production", "title": "Review logs and monitoring",
     "params": {"instructions": "Read the service and system logs since the sync and check the monitoring "
                                "dashboards; confirm with what you looked at."},
     "estimated_seconds": 900},
    {"kind": "command", "target": "production", "title": "Re-enable the service",
     "params": {"command": "minidb-service enable && minidb-service start && minidb-service status",
                "timeout": 120},
     "estimated_seconds": 30, "milestone": "service_restored"},
]


def load_seed_runbook(Runbook, StepSpec, user=None):
    """Create the seed runbook's first version if it is missing. Works with the
    real models and with a migration's historical ones (so it validates here)."""
    existing = Runbook.objects.filter(name=SEED_NAME).order_by("-version").first()
    if existing is not None:
        return existing
    runbook = Runbook.objects.create(name=SEED_NAME, version=1, description=SEED_DESCRIPTION,
                                     check_sets=SEED_CHECK_SETS, created_by=user)
    for position, step in enumerate(SEED_STEPS, start=1):
        params = registry.clean_params(step["kind"], step["params"], step["target"], runbook=runbook)
        StepSpec.objects.bulk_create([StepSpec(
            runbook=runbook, position=position, kind=step["kind"], title=step["title"], params=params,
            target=step["target"], needs_approval=step.get("needs_approval", False),
            estimated_seconds=step["estimated_seconds"], milestone=step.get("milestone", ""))])
    return runbook
