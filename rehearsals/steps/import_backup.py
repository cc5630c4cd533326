"""``import_backup``: bring the latest backup archive into the clone and unpack it.

The archive travels production -> worker -> clone (the clone cannot reach
production). Its SHA-256 is checked when the runbook gives one; a missing or
truncated archive fails the step with a clear message and leaves no file under
the destination name.
"""
from __future__ import annotations

from workers.engines.ssh import SSHError
from workers.engines.transfer import copy_file, unpack_archive

from .base import StepFailed, StepKind
from .params import AbsPath, Str
from .registry import registry


@registry.register
class ImportBackupStep(StepKind):
    name = "import_backup"
    label = "Import a backup into the clone"
    targets = frozenset({"clone"})
    params = {
        "source": Str(default="production", choices=("production",),
                      help="Host that holds the archive (the production host, over SSH)."),
        "archive_path": AbsPath(required=True, help="Archive path on the source host."),
        "sha256": Str(pattern=r"[0-9a-f]{64}", help="Expected SHA-256 of the archive."),
        "dest_path": AbsPath(required=True, help="Where the archive is placed on the clone."),
        "unpack_to": AbsPath(help="Unpack the archive here on the clone (any tar format)."),
    }

    def summary(self, params):
        return f"{params.get('source')}:{params.get('archive_path')} -> clone:{params.get('dest_path')}"

    def run(self, ctx):
        p = ctx.params
        try:
            with ctx.connect(ctx.production_endpoint()) as src, ctx.connect(ctx.clone_endpoint()) as dst:
                result = copy_file(src, p["archive_path"], dst, p["dest_path"], emitter=ctx.emitter,
                                   expected_sha256=p.get("sha256"))
                if p.get("unpack_to"):
                    unpack_archive(dst, p["dest_path"], p["unpack_to"], emitter=ctx.emitter)
        except SSHError as exc:
            raise StepFailed(str(exc)) from exc
        out = result.as_dict()
        out["unpacked_to"] = p.get("unpack_to")
        return out
