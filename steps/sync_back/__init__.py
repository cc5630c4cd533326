"""``sync_back``: carry the repaired files from the clone to production — only those.

Before anything is written a worker computes the **preview** (per file: bytes and
chunks to send, backup location, drift conflicts, from the diff's stored manifests
and a fresh hash of production). A second person approves exactly that plan; the
run recomputes it and refuses if it changed. The engine (workers/engines/sync/)
sends only differing blocks through the worker, swaps each file atomically after
hard-linking the original into a per-run backup directory, and verifies the
result against the clone's hash. Re-running resumes by content; rollback restores
the originals.
"""
from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from rehearsals.models import Finding, StepRun, SyncJournalEntry
from rehearsals.writers import cancel_probe
from runbooks.kinds import StepFailed, StepKind, registry
from runbooks.params import AbsPath, Str
from workers.engines.manifest import Manifest, ManifestError, build_remote_manifest, diff_manifests
from workers.engines.ssh import SSHError
from workers.engines.sync import ConnectionLost, SyncCancelled, SyncError, SyncPlan, plan_sync, sync_back

from .actions import rollback_action, rollback_job, run_id_for


def latest_diff_run(rehearsal):
    run = (StepRun.objects.filter(rehearsal=rehearsal, step__kind="diff", status=StepRun.Status.SUCCEEDED)
           .order_by("-finished_at").first())
    if run is None:
        raise StepFailed("there is no successful diff in this rehearsal to sync from: run the diff step first")
    return run


class DbJournal:
    """The engine's Journal interface, written to SyncJournalEntry rows and the event stream."""

    def __init__(self, step_run, emitter) -> None:
        self.step_run, self.emitter = step_run, emitter

    def _row(self, run_id: str, path: str, state: str, detail: dict) -> None:
        SyncJournalEntry.objects.create(step_run=self.step_run, run_id=run_id, path=path, state=state,
                                        detail=detail)

    def start(self, run_id: str, fingerprint: str, files: list[str]) -> None:
        self._row(run_id, "", "start", {"fingerprint": fingerprint, "files": len(files)})

    def record(self, run_id: str, path: str, state: str, detail: dict) -> None:
        self._row(run_id, path, state, detail)
        self.emitter.data("journal", {"path": path, "state": state})

    def finish(self, run_id: str, outcome: str, summary: dict) -> None:
        self._row(run_id, "", outcome, summary)


@registry.register
class SyncBackStep(StepKind):
    name = "sync_back"
    label = "Sync repaired files back to production"
    targets = frozenset({"production"})
    has_preview = True
    writes_production = True
    consumes_finding_selection = True  # a diff's selection is frozen once this step has used it
    actions = {"rollback": rollback_action}
    jobs = {"rollback": rollback_job}
    panel = "panel.html"
    params = {
        "selection": Str(default="selected", choices=("selected", "all_changed"),
                         help="'selected': the diff's findings chosen for sync-back (by default the files "
                              "corrupted on production and healthy on the clone); 'all_changed': every changed file."),
        "backup_dir": AbsPath(default="/var/backups/understudy",
                              help="Originals are hard-linked here, per run, before each swap."),
    }

    def panel_context(self, step_run, context):
        files = (step_run.result or {}).get("files") or []
        return {"done_files": sum(1 for f in files if isinstance(f, dict) and f.get("state") == "done")}

    def summary(self, params):
        return f"only the {params.get('selection', 'selected')} files; originals kept under {params.get('backup_dir')}"

    # -------------------------------------------------------------- plan
    def _plan(self, ctx) -> tuple[SyncPlan, Any]:
        diff_run = latest_diff_run(ctx.rehearsal)
        folder = Path(diff_run.result.get("manifests", ""))
        try:
            mc = Manifest.load(folder / "clone.manifest.gz")
            mp = Manifest.load(folder / "production.manifest.gz")
        except (OSError, ManifestError) as exc:
            raise StepFailed(f"the diff's manifests cannot be read from {folder}: {exc}") from exc
        diff = diff_manifests(mc, mp, quick=mc.quick or mp.quick)
        findings = Finding.objects.filter(step_run=diff_run)
        if ctx.params["selection"] == "selected":
            findings = findings.filter(selected=True)
        else:
            findings = findings.filter(change=Finding.Change.CHANGED)
        wanted = {(f.root, base64.b64decode(f.rel_b64)) for f in findings}
        overrides = [base64.b64decode(f.rel_b64) for f in findings if f.drift_override]
        if not wanted:
            raise StepFailed("no files are selected for sync-back: nothing would be written")
        items = [e for e in diff.entries if (e.root, e.rel) in wanted]
        if len(items) != len(wanted):
            raise StepFailed("the diff's findings and its stored manifests disagree; run the diff again")
        ctx.emitter.phase("drift-check")
        ctx.emitter.log(f"hashing production again to check nothing changed since the diff "
                        f"({len(items)} file(s) selected)", "info")
        try:
            current = build_remote_manifest(ctx.production_endpoint(), mp.roots, algo=mp.algo,
                                            chunk_size=mp.chunk_size, emitter=ctx.emitter, label="production")
            plan = plan_sync(items, mc, mp, backup_dir=ctx.params["backup_dir"], current_prod_manifest=current,
                             overrides=overrides)
        except (ManifestError, SSHError, SyncError) as exc:
            raise StepFailed(f"could not prepare the sync-back plan: {exc}") from exc
        # The plan's own guard covers changes since the diff; the diff flagged changes since the
        # clone was taken. Both block a file until a person overrides it.
        drift_since_clone = {(f.root, base64.b64decode(f.rel_b64)): f for f in findings if f.drift}
        for pf in plan.files:
            finding = drift_since_clone.get((pf.root, pf.rel))
            if finding is not None:
                pf.conflicts.append(f"changed on production after the clone was taken ({finding.drift})")
                pf.overridden = pf.overridden or finding.drift_override
        return plan, diff_run

    def preview(self, ctx) -> dict[str, Any]:
        plan, diff_run = self._plan(ctx)
        out = plan.to_dict()
        out["fingerprint"] = plan.fingerprint()
        out["diff_step_run"] = diff_run.pk
        out["run_id"] = run_id_for(ctx.step_run)
        t = out["totals"]
        ctx.emitter.log(f"preview: {t['files']} file(s), {t['chunks']} chunk(s), at most {t['send_bytes']} bytes "
                        f"to send; {t['blocked']} blocked by drift", "info")
        for f in plan.blocked:
            ctx.emitter.log(f"BLOCKED {f.display}: production changed since the clone ({', '.join(f.conflicts)})",
                            "stderr")
        return out

    def run(self, ctx) -> dict[str, Any]:
        approved = ctx.approved_plan
        if not approved:
            raise StepFailed("sync-back runs only with an approved plan")
        plan, _ = self._plan(ctx)
        if plan.fingerprint() != approved.get("fingerprint"):
            raise StepFailed("the plan changed since it was approved (production or the selection moved); "
                             "retry the step to get a new preview and a new approval")
        if plan.blocked:
            raise StepFailed(f"{len(plan.blocked)} file(s) changed on production after the clone was taken: "
                             + ", ".join(f.display for f in plan.blocked[:10]))
        run_id = run_id_for(ctx.step_run)
        try:
            report = sync_back(plan, ctx.clone_endpoint(), ctx.production_endpoint(), run_id=run_id,
                               emitter=ctx.emitter, journal=DbJournal(ctx.step_run, ctx.emitter),
                               cancelled=cancel_probe(ctx))
        except SyncCancelled as exc:
            raise StepFailed(str(exc), {"run_id": run_id, "cancelled": str(exc),
                                        "report": exc.report.to_dict() if exc.report else None}) from exc
        except ConnectionLost as exc:
            # No automatic rollback here: the agent on production may still be finishing a rename.
            raise StepFailed(f"connection lost during sync-back: every file is either its original or a "
                             f"verified copy of the clone's; retry to resume, or roll back: {exc}",
                             {"run_id": run_id, "report": exc.report.to_dict() if exc.report else None}) from exc
        except SyncError as exc:
            raise StepFailed(f"sync-back stopped; files it had already replaced in this run are rolled back "
                             f"(the report says which): {exc}",
                             {"run_id": run_id, "report": exc.report.to_dict() if exc.report else None}) from exc
        except SSHError as exc:
            raise StepFailed(f"sync-back failed: {exc}", {"run_id": run_id}) from exc
        out = report.to_dict()
        out["backup_dir"] = ctx.params["backup_dir"]
        return out
