"""Step kinds whose schema is settled but whose engine has not landed yet.

A runbook using them validates today; running one fails the step with a clear
"not implemented yet" message — never a fake success. Each kind moves to its own
module when its engine lands (clone: P2V issue; import_backup/check/diff: restore
and verify issue; sync_back/live_sync: sync-back issue).
"""
from __future__ import annotations

from .base import StepFailed, StepKind
from .params import AbsPath, Bool, Int, List, OneOf, Regex, Str
from .registry import registry


class PlannedStep(StepKind):
    def run(self, ctx):
        raise StepFailed(f"The {self.name!r} step kind is not implemented yet in this version of understudy; "
                         f"skip this step or run it by hand and confirm.")


CHECK_VARIANTS = {
    "command": {"name": Str(required=True), "command": Str(required=True),
                "expect_exit": Int(default=0, min=0, max=255), "expect_output": Regex(),
                "required": Bool(default=True), "timeout": Int(default=120, min=1)},
    "http": {"name": Str(required=True), "url": Str(required=True, pattern=r"https?://\S+"),
             "expect_status": Int(default=200, min=100, max=599), "body_pattern": Regex(),
             "max_latency_ms": Int(min=1), "required": Bool(default=True)},
    "tcp": {"name": Str(required=True), "host": Str(default="127.0.0.1"), "port": Int(required=True, min=1, max=65535),
            "required": Bool(default=True)},
    "file_checksum": {"name": Str(required=True), "path": AbsPath(required=True),
                      "sha256": Str(required=True, pattern=r"[0-9a-f]{64}"), "required": Bool(default=True)},
}


@registry.register
class CloneStep(PlannedStep):
    name = "clone"
    label = "Live P2V clone to a VM"
    targets = frozenset({"production"})
    params = {
        "pre_command": Str(help="Run on production before copying (flush/checkpoint)."),
        "post_command": Str(help="Run on production after copying."),
        "exclude": List(of=AbsPath(), default=list, help="Paths left out besides /proc /sys /dev /run /tmp."),
        "disable_services": List(of=Str(), default=list, help="Services that must not run in the clone."),
        "hostname": Str(help="Clone's hostname (default: <production>-clone-<rehearsal>)."),
        "memory_mib": Int(default=1024, min=128),
        "vcpus": Int(default=1, min=1, max=64),
        "headroom_percent": Int(default=30, min=5, max=500),
        "boot_timeout": Int(default=300, min=10),
    }


@registry.register
class ImportBackupStep(PlannedStep):
    name = "import_backup"
    label = "Import a backup into the clone"
    targets = frozenset({"clone"})
    params = {
        "source": Str(default="production", choices=("production", "upload"),
                      help="Where the archive is: a path on the production host, or an upload."),
        "archive_path": AbsPath(help="Archive path on the source host."),
        "sha256": Str(pattern=r"[0-9a-f]{64}", help="Expected checksum of the archive."),
        "dest_path": AbsPath(required=True, help="Where the archive is placed on the clone."),
        "unpack_to": AbsPath(help="Unpack the archive here on the clone (tar formats)."),
    }

    def validate(self, params, target):
        if params.get("source") == "production" and not params.get("archive_path"):
            return ["archive_path: required when source is production"]
        return []


@registry.register
class CheckStep(PlannedStep):
    name = "check"
    label = "Acceptance checks"
    params = {"checks": List(of=OneOf(tag="type", variants=CHECK_VARIANTS), min_items=1)}


@registry.register
class DiffStep(PlannedStep):
    name = "diff"
    label = "Find corrupted datafiles (clone vs production)"
    targets = frozenset({"clone"})
    params = {
        "paths": List(of=AbsPath(), min_items=1, required=True),
        "verify_command": Str(help="Page-check tool, e.g. 'dbverify {path}'; {path} is passed as one argument."),
        "quick": Bool(default=False, help="Trust size+mtime first; default hashes full content."),
        "chunk_size": Int(default=1 << 20, min=4096, max=64 << 20),
        "exclude": List(of=Str(), default=list),
    }

    def validate(self, params, target):
        cmd = params.get("verify_command")
        if cmd and "{path}" not in cmd:
            return ["verify_command: must contain {path}"]
        return []


@registry.register
class SyncBackStep(PlannedStep):
    name = "sync_back"
    label = "Sync repaired files back to production"
    targets = frozenset({"production"})
    params = {
        "selection": Str(default="corrupted_on_production", choices=("corrupted_on_production", "all_changed")),
        "backup_dir": AbsPath(default="/var/backups/understudy"),
    }


@registry.register
class LiveSyncStep(PlannedStep):
    name = "live_sync"
    label = "Live catch-up sync"
    targets = frozenset({"clone", "production"})
    params = {
        "mode": Str(default="files", choices=("files", "vendor")),
        "paths": List(of=AbsPath(), default=list),
        "direction": Str(default="production_to_clone", choices=("production_to_clone", "clone_to_production")),
        "command": Str(help="Vendor catch-up command (mode=vendor)."),
        "lag_pattern": Regex(default=r"lag\w*=(?P<lag>\d+)", help="Regex with a 'lag' group, read from the output."),
        "converged_at": Int(default=0, min=0, help="Lag at or below which the sync has converged."),
        "time_limit": Int(default=3600, min=1),
    }

    def validate(self, params, target):
        if params.get("mode") == "vendor" and not params.get("command"):
            return ["command: required when mode is vendor"]
        if params.get("mode") == "vendor" and "(?P<lag>" not in (params.get("lag_pattern") or ""):
            return ["lag_pattern: needs a named group (?P<lag>...)"]
        if params.get("mode") == "files" and not params.get("paths"):
            return ["paths: required when mode is files"]
        return []
