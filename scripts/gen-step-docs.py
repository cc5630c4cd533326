"""Regenerate docs/steps.md from the step-kind registry: .venv/bin/python scripts/gen-step-docs.py"""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "understudy.settings")
import django  # noqa: E402

django.setup()
from runbooks.kinds import registry  # noqa: E402
from runbooks.models import StepSpec  # noqa: E402

out = ["# Step kinds\n",
       "Every step of a runbook has a `kind`, a `target` (`production` or `clone`), typed `params` validated when the",
       "runbook is saved (all errors at once), `needs_approval`, an estimated duration and an optional `milestone`",
       "(" + ", ".join(f"`{m}`" for m in StepSpec.Milestone.values if m) + "): what its success means for the",
       "incident and the report; when a production run's `service_restored` step succeeds, the incident is resolved.",
       "This page is generated from the registry (one folder per kind under `steps/`) by `scripts/gen-step-docs.py`;",
       "each kind's module docstring explains it.\n"]
for name in sorted(registry.names()):
    kind = registry.get(name)
    module = sys.modules[type(kind).__module__]
    out.append(f"## `{name}` — {kind.label}\n")
    out.append((module.__doc__ or "").strip() + "\n")
    out.append(f"Targets: {', '.join(sorted(kind.targets))}." + (" A person completes it." if kind.interactive else "")
               + (" Computes a preview for the approver first." if kind.has_preview else "") + "\n")
    if kind.params:
        out.append("| param | type | required | default | meaning |\n|---|---|---|---|---|")
        for pname, field in kind.params.items():
            default = field.default() if callable(field.default) else field.default
            choices = f" One of: {', '.join(field.choices)}." if getattr(field, "choices", None) else ""
            out.append(f"| `{pname}` | {type(field).__name__.lower()} | {'yes' if field.required else ''} | "
                       f"{'' if default is None else '`' + repr(default) + '`'} | {field.help}{choices} |")
        out.append("")
(Path(__file__).resolve().parents[1] / "docs" / "steps.md").write_text("\n".join(out) + "\n")
print("wrote docs/steps.md")
