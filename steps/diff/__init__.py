"""``diff``: which datafiles are really corrupted on production?

Both sides are hashed at the same time by a small agent sent over SSH (see
workers/engines/manifest/). Files whose content differs are checked with the
database's own verify tool on both sides: only *corrupted on production, healthy
on the clone* is the repair; *healthy on both* is merely newer production data
and is left alone; *corrupted on both* fails the step loudly. Files that changed
on production after the clone was taken are flagged (drift guard). Manifests are
kept (compressed) for the sync-back step.
"""
from __future__ import annotations

import base64
from pathlib import Path

from django.conf import settings

from rehearsals.models import Finding
from runbooks.kinds import StepFailed, StepKind, registry
from runbooks.params import AbsPath, Bool, Int, List, Str
from workers.engines.manifest import ManifestError, build_pair, classify, diff_manifests, drift_check
from workers.engines.ssh import SSHError

from .actions import select_action, selection_is_used


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@registry.register
class DiffStep(StepKind):
    name = "diff"
    label = "Find corrupted datafiles (clone vs production)"
    targets = frozenset({"clone"})
    actions = {"select": select_action}
    panel = "panel.html"
    params = {
        "paths": List(of=AbsPath(), min_items=1, required=True),
        "verify_command": Str(help="Page-check tool, e.g. 'dbverify {path}'; {path} is passed as one argument."),
        "quick": Bool(default=False, help="Trust size+mtime first; default hashes full content."),
        "chunk_size": Int(default=1 << 20, min=4096, max=64 << 20),
    }

    def validate(self, params, target):
        cmd = params.get("verify_command")
        if cmd and "{path}" not in cmd:
            return ["verify_command: must contain {path}"]
        return []

    def panel_context(self, step_run, context):
        editable = (context["can_operate"] and context["rehearsal_running"]
                    and step_run.status == step_run.Status.SUCCEEDED and not selection_is_used(step_run))
        return {"editable": editable}

    def summary(self, params):
        s = "compare " + ", ".join(params.get("paths", []))
        if params.get("verify_command"):
            s += f"; verify with: {params['verify_command']}"
        return s

    def carries_over(self, spec):
        # its findings are about production as it is now: a production run diffs again
        return False

    def run(self, ctx):
        p = ctx.params
        clone = ctx.workbench()
        save_dir = Path(settings.UNDERSTUDY_DATA_DIR) / "manifests" / f"rehearsal-{ctx.rehearsal.pk}" / \
            f"steprun-{ctx.step_run.pk}"
        save_dir.mkdir(parents=True, exist_ok=True)
        clone_ep, prod_ep = ctx.clone_endpoint(), ctx.production_endpoint()
        try:
            mc, mp = build_pair(clone_ep, prod_ep, p["paths"], chunk_size=p["chunk_size"], quick=p["quick"],
                                emitter=ctx.emitter)
            mc.save(save_dir / "clone.manifest.gz")
            mp.save(save_dir / "production.manifest.gz")
            ctx.emitter.phase("diff")
            diff = diff_manifests(mc, mp, quick=p["quick"])
            classification = classify(diff, p.get("verify_command"), clone_ep, prod_ep, ctx.emitter, strict=False)
        except (ManifestError, SSHError, ValueError) as exc:
            raise StepFailed(f"diff failed: {exc}") from exc

        verdicts = {id(c.entry): c for c in classification.files}
        drifted = {}
        if clone and clone.point_in_time:
            for d in drift_check(clone.point_in_time.timestamp(), mp, paths=[e.rel for e in diff.entries]):
                drifted[(d.root, d.rel)] = d.reason
        rows = []
        for e in diff.entries:
            c = verdicts.get(id(e))
            evidence = {"reasons": e.reasons, "error": e.error}
            if c is not None:
                evidence.update({"verify_clone": c.clone, "verify_production": c.production})
            verdict = c.cls if c is not None else ""
            rows.append(Finding(
                rehearsal=ctx.rehearsal, step_run=ctx.step_run,
                path=e.display, path_b64=_b64(e.prod_path), clone_path_b64=_b64(e.clone_path), root=e.root,
                rel_b64=_b64(e.rel), change=e.category, verdict=verdict, size_clone=e.size_clone,
                size_production=e.size_prod, chunk_count=e.chunk_count, differing_chunks=e.chunks,
                evidence=evidence, drift=drifted.get((e.root, e.rel), ""),
                selected=verdict == "corrupted_on_production" and not drifted.get((e.root, e.rel))))
        Finding.objects.filter(step_run=ctx.step_run).delete()
        Finding.objects.bulk_create(rows)

        repair = [r for r in rows if r.verdict == "corrupted_on_production"]
        repair_bytes = sum(r.size_production or 0 for r in repair)
        total_bytes = mp.total_bytes
        result = {
            "algo": diff.algo, "mode": diff.mode, "quick": diff.quick, "chunk_size": diff.chunk_size,
            "totals": diff.totals,
            "verdicts": {v: sum(1 for r in rows if r.verdict == v) for v in {r.verdict for r in rows if r.verdict}},
            "repair_files": len(repair), "repair_bytes": repair_bytes, "production_bytes": total_bytes,
            "repair_percent": round(100.0 * repair_bytes / total_bytes, 2) if total_bytes else 0.0,
            "drifted": len(drifted), "manifests": str(save_dir),
            "repair_paths": [r.path for r in repair],
            "newer_paths": [r.path for r in rows if r.verdict == "newer_on_production"],
        }
        ctx.emitter.log(f"{len(repair)} file(s) corrupted on production and healthy on the clone: "
                        f"{repair_bytes} of {total_bytes} bytes ({result['repair_percent']}%)", "info")
        both = [r.path for r in rows if r.verdict == "corrupted_on_both"]
        if both:
            raise StepFailed(f"{len(both)} file(s) fail the verify tool on the clone AND on production: the restore "
                             f"did not repair them, so syncing back would copy corruption: "
                             f"{', '.join(both[:10])}{' ...' if len(both) > 10 else ''}", result)
        return result
