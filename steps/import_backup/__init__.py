"""``import_backup``: bring the latest backup archive into the clone and unpack it.

The archive travels from production (or a registered backup server) through the
worker to the clone (the clone has no route to either). Its SHA-256 is checked when the runbook gives one; a missing or
truncated archive fails the step with a clear message and leaves no file under
the destination name.
"""
from __future__ import annotations

from inventory.models import ProductionHost
from runbooks.kinds import StepFailed, StepKind, registry
from runbooks.params import AbsPath, Str
from workers.engines.ssh import SSHError
from workers.engines.transfer import copy_file, unpack_archive


@registry.register
class ImportBackupStep(StepKind):
    name = "import_backup"
    label = "Import a backup into the clone"
    targets = frozenset({"clone"})
    params = {
        "source": Str(default="production",
                      help="Host that holds the archive: 'production' (the incident's host) or the name of "
                           "another registered host, such as the backup server."),
        "archive_path": AbsPath(required=True, help="Archive path on the source host."),
        "sha256": Str(pattern=r"[0-9a-f]{64}", help="Expected SHA-256 of the archive."),
        "dest_path": AbsPath(required=True, help="Where the archive is placed on the clone."),
        "unpack_to": AbsPath(help="Unpack the archive here on the clone (any tar format)."),
    }

    def summary(self, params):
        return f"{params.get('source')}:{params.get('archive_path')} -> clone:{params.get('dest_path')}"

    def source_endpoint(self, ctx):
        name = ctx.params["source"]
        if name == "production":
            # the backup is read from the real host in both modes: a dress rehearsal reads production
            return ctx.real_production("read")
        host = ProductionHost.objects.filter(name=name).first()
        if host is None:
            raise StepFailed(f"no registered host is named {name!r}: register the backup server (with its pinned "
                             f"host key) in the inventory first")
        return host.endpoint()

    def run(self, ctx):
        p = ctx.params
        source = self.source_endpoint(ctx)
        try:
            with ctx.connect(source) as src, ctx.connect(ctx.clone_endpoint()) as dst:
                result = copy_file(src, p["archive_path"], dst, p["dest_path"], emitter=ctx.emitter,
                                   expected_sha256=p.get("sha256"))
                if p.get("unpack_to"):
                    unpack_archive(dst, p["dest_path"], p["unpack_to"], emitter=ctx.emitter)
        except SSHError as exc:
            raise StepFailed(str(exc)) from exc
        out = result.as_dict()
        out["unpacked_to"] = p.get("unpack_to")
        return out
