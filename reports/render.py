"""A report snapshot rendered: the HTML body (page and stored copy), the printable
document (PDF through WeasyPrint) and Markdown. All three read only the snapshot, so a
published version renders the same whatever happened to the rows since."""
from __future__ import annotations

import copy
import datetime as dt
import zoneinfo
from typing import Any

from django.template.loader import render_to_string
from django.urls import reverse

from .data import duration

UTC = dt.timezone.utc


def viewer_zone(name: str | None) -> dt.tzinfo:
    if not name or name in ("UTC", "Etc/UTC"):
        return UTC
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return UTC


def when(value: str | None, zone: dt.tzinfo) -> str:
    """UTC, and the viewer's zone beside it when that is not UTC."""
    if not value:
        return "—"
    t = dt.datetime.fromisoformat(value).astimezone(UTC)
    shown = f"{t:%Y-%m-%d %H:%M:%S} UTC"
    if zone is not UTC:
        local = t.astimezone(zone)
        shown += f" ({local:%H:%M:%S} {local.tzname()})"
    return shown


def number(value: float | None, unit: str = "") -> str:
    if value is None:
        return "—"
    if unit == "bytes":
        return f"{int(value):,} B" + (f" ({value / 2**20:.1f} MiB)" if value >= 2**20 else "")
    if unit == "bytes/s":
        return f"{value / 2**20:.1f} MiB/s"
    if unit == "s":
        return duration(value)
    if isinstance(value, float):
        return f"{value:,.2f} {unit}".strip()
    return f"{value:,} {unit}".strip()


def view_model(snapshot: dict[str, Any], zone_name: str | None = None) -> dict[str, Any]:
    """The snapshot with display strings added; the snapshot itself is left untouched."""
    zone = viewer_zone(zone_name)
    vm = copy.deepcopy(snapshot)
    vm["zone"] = "UTC" if zone is UTC else str(zone)
    for m in vm["milestones"]:
        m["shown"] = when(m["at"], zone) + (f" (in dress rehearsal #{m['in_rehearsal']})"
                                            if m.get("in_rehearsal") else "")
    for e in vm["timeline"]:
        e["shown"] = when(e["at"], zone)
    for s in vm["steps"]:
        s["seconds_shown"] = duration(s["seconds"])
        if s["status"] == "carried" and s["seconds"] is not None:
            # not run again here: what it took in the dress rehearsal, not the runbook's guess
            s["estimate_shown"] = f"{duration(s['seconds'])} (took, in the dress rehearsal)"
        else:
            s["estimate_shown"] = duration(s["dress_estimate_seconds"] if s["dress_estimate_seconds"] is not None
                                           else s["estimated_seconds"])
        s["projected_shown"] = "does not converge" if s["projected_seconds"] is None and s["seconds"] is not None \
            else duration(s["projected_seconds"])
        s["facts_shown"] = [{"label": f["label"], "value": number(f["value"], f["unit"])}
                            for f in s["facts"].values()]
        for a in s["attempts"]:
            a["start_shown"], a["end_shown"] = when(a["started_at"], zone), when(a["finished_at"], zone)
            a["seconds_shown"] = duration(a["seconds"])
            a["log_url"] = reverse("reports:log", args=[a["id"]]) if a["log_lines"] else ""
            for ap in a["approvals"]:
                ap["wait_shown"] = duration(ap["wait_seconds"])
        own = s["attempts"][-1] if s["attempts"] else {}
        s["production_seconds"] = own.get("seconds") if own.get("status") == "succeeded" else None
        s["production_shown"] = duration(s["production_seconds"]) if s["production_seconds"] is not None \
            else (own.get("status_label") or "not run")
        if s["dress_estimate_seconds"] and s["production_seconds"] is not None:
            s["error_percent"] = round(100.0 * (s["production_seconds"] - s["dress_estimate_seconds"])
                                       / s["dress_estimate_seconds"], 1)
    key = vm["key_numbers"]
    for b in key["bytes"]:
        b["shown"] = number(b["value"], "bytes")
    for r in key["rates"]:
        r["shown"] = number(r["value"], r["unit"])
    if key["degraded"]:
        key["degraded"]["from_shown"] = when(key["degraded"]["from"], zone)
        key["degraded"]["to_shown"] = when(key["degraded"]["to"], zone) if key["degraded"]["to"] else "not yet"
        key["degraded"]["shown"] = duration(key["degraded"]["seconds"])
    key["people_shown"], key["total_shown"] = duration(key["people_seconds"]), duration(key["total_seconds"])
    for name in ("estimate", "estimate_half_rate"):
        e = vm[name]
        e["total_shown"] = duration(e["total_seconds"]) if e["converges"] else "does not converge"
        e["machine_shown"] = duration(e["machine_seconds"]) if e["converges"] else "does not converge"
        e["people_shown"] = duration(e["people_seconds"])
        e["preparation_shown"] = duration(e["preparation_seconds"])
        for s in e["steps"]:
            s["projected_shown"] = "does not converge" if s["projected"] is None else duration(s["projected"])
            s["measured_shown"] = duration(s["measured"])
        e["volumes_shown"] = [{"name": k, "value": number(v, "bytes")} for k, v in e["volumes"].items()]
    if vm["range"]:
        for k in ("min", "median", "max"):
            vm["range"][k + "_shown"] = duration(vm["range"][k])
    if vm["incident"]["target_minutes"]:
        vm["incident"]["target_shown"] = duration(vm["incident"]["target_minutes"] * 60)
    for f in vm["findings"]:
        f["size_shown"] = number(f["size"], "bytes")
    return vm


def html_body(snapshot: dict[str, Any], zone_name: str | None = None) -> str:
    return render_to_string("reports/body.html", {"r": view_model(snapshot, zone_name)})


def html_document(snapshot: dict[str, Any], zone_name: str | None = None, *, version: int | None = None) -> str:
    vm = view_model(snapshot, zone_name)
    return render_to_string("reports/document.html", {"r": vm, "body": html_body(snapshot, zone_name),
                                                      "version": version})


def pdf(snapshot: dict[str, Any], zone_name: str | None = None, *, version: int | None = None) -> bytes:
    import weasyprint  # loaded on the first PDF: it pulls Pango in, which the HTML pages never need

    return weasyprint.HTML(string=html_document(snapshot, zone_name, version=version)).write_pdf()


def _md_cell(value: Any) -> str:
    return str(value if value not in (None, "") else "—").replace("|", "\\|").replace("\n", " ")


def _md_table(columns: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(_md_cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return out + [""]


def markdown(snapshot: dict[str, Any], zone_name: str | None = None, *, version: int | None = None) -> str:
    r = view_model(snapshot, zone_name)
    inc, reh, key, est = r["incident"], r["rehearsal"], r["key_numbers"], r["estimate"]
    out = [f"# Incident report: #{inc['id']} {inc['title']}", "",
           f"- Severity: {inc['severity']} · incident {inc['status']}",
           f"- Production host: {inc['host']} ({inc['host_address']}), broken service: {inc['broken_service'] or '—'}",
           f"- {reh['kind_label']} #{reh['id']} of {reh['runbook']} on {reh['hypervisor']}: {reh['status']}"
           + "".join(f"; {c['role']}: {c['name']} ({c['status']})" for c in reh["clones"])
           + (f"; continues dress rehearsal #{reh['dress_rehearsal']}" if reh["dress_rehearsal"] else "")
           + (f"; started without a dress rehearsal: {reh['override_reason']}" if reh["override_reason"] else ""),
           *[f"- {c['role']} {c['name']}: {c['consistency']['summary']}" for c in reh["clones"]
             if c["consistency"].get("summary")],
           f"- Report: {r['report']['status']}" + (f", version {version}" if version else "")
           + f"; authors: {', '.join(r['report']['authors']) or '—'}", "",
           f"**{r['verdict']}**", "", r["summary"], "", "## Key numbers", ""]
    if key["degraded"]:
        out.append(f"- Service degraded from {key['degraded']['from_shown']} to {key['degraded']['to_shown']} "
                   f"({key['degraded']['shown']}); the server stayed in production")
    if not key["production_changed"]:
        out.append("- Production was not changed: this dress rehearsal's production steps acted on the stand-in")
    out += [f"- {b['label']}: {b['shown']}" for b in key["bytes"]]
    out += [f"- step {x['step']}, {x['label']}: {x['shown']}" for x in key["rates"]]
    out += [f"- time waiting on people: {key['people_shown']}", f"- total: {key['total_shown']}", "",
            "## Restoration-time estimate", "",
            f"- Estimate for the real repair: **{est['total_shown']}** (machine {est['machine_shown']}, "
            f"people {est['people_shown']})"
            + (f"; prepared beforehand on the workbench: {est['preparation_shown']}" if est["preparation_seconds"]
               else "")]
    if inc["target_minutes"]:
        c = r["compliance"]
        out.append(f"- Target: {inc['target_shown']}; ratio {c['ratio'] if c['ratio'] is not None else '—'}: "
                   f"{c['label']}")
    out.append(f"- At half the measured throughput: {r['estimate_half_rate']['total_shown']}")
    if r["range"]:
        out.append(f"- Over {r['range']['runs']} runs of this runbook version: {r['range']['min_shown']} – "
                   f"{r['range']['median_shown']} – {r['range']['max_shown']} (min – median – max)")
    out.append("")
    out += _md_table(["step", "measured", "estimate", "how"],
                     [[f"{s['position']}. {s['title']}", s["measured_shown"], s["projected_shown"], s["method"]]
                      for s in est["steps"]])
    out += ["## Milestones", ""] + [f"- {m['label']}: {m['shown']}" for m in r["milestones"]] + [""]
    out += ["## Steps", ""]
    rows = []
    for s in r["steps"]:
        for a in s["attempts"] or [{}]:
            ap = "; ".join(f"{x['approver'] or '—'} ({x['decision']}, waited {x['wait_shown']})"
                           for x in a.get("approvals", []))
            rows.append([f"{s['position']}. {s['title']}", a.get("attempt", "—"), a.get("start_shown"),
                         a.get("end_shown"), a.get("seconds_shown"), s["estimate_shown"],
                         a.get("status_label", s["status_label"]), a.get("requested_by"), ap,
                         (f"confirmed by {a['confirmed_by']}: " if a.get("confirmed_by") else "")
                         + (a.get("note") or a.get("error") or "")])
    out += _md_table(["step", "attempt", "start", "end", "duration", "estimate", "result", "ran by",
                      "approved by", "note / error"], rows)
    if r["findings"]:
        out += ["## Findings", ""] + _md_table(
            ["file", "size", "% of data", "change", "verdict", "selected", "drift"],
            [[f["path"], f["size_shown"], f["percent"], f["change"], f["verdict_label"],
              "yes" if f["selected"] else "no", (f["drift"] + (" (overridden)" if f["drift_override"] else ""))]
             for f in r["findings"]])
    for s in r["steps"]:
        for table in s["evidence"]:
            out += [f"### Step {s['position']}: {table['title']}", ""] + _md_table(table["columns"], table["rows"])
    if r["failures"]:
        out += ["## What failed along the way", ""]
        out += [f"- step {f['position']} ({f['title']}), attempt {f['attempt']}: {f['error']}" for f in r["failures"]]
        out.append("")
    lessons = r["lessons"]
    out += ["## Lessons", "", f"- Went well: {lessons['went_well'] or '—'}",
            f"- Went wrong: {lessons['went_wrong'] or '—'}", f"- Where we got lucky: {lessons['got_lucky'] or '—'}",
            ""]
    if r["action_items"]:
        out += ["## Action items", ""] + _md_table(["item", "owner", "due", "done"], [
            [a["text"], a["owner"], a["due"], "yes" if a["done"] else "no"] for a in r["action_items"]])
    if any(s["dress_estimate_seconds"] is not None for s in r["steps"]):
        out += ["## Dress rehearsal vs production", ""] + _md_table(
            ["step", "dress rehearsal estimate", "production actual", "error"],
            [[f"{s['position']}. {s['title']}", duration(s["dress_estimate_seconds"]), s["production_shown"],
              f"{s['error_percent']} %" if "error_percent" in s else "—"] for s in r["steps"]])
    out += ["## Procedure as it ran", ""] + _md_table(
        ["#", "step", "kind", "target", "approval", "estimate", "params"],
        [[p["position"], p["title"], p["kind"], p["target"], "yes" if p["needs_approval"] else "",
          duration(p["estimated_seconds"]), p["params"]] for p in r["procedure"]])
    out += ["## Timeline", ""] + [f"- {e['shown']} · {e['actor']} · {e['message']}" for e in r["timeline"]]
    return "\n".join(out) + "\n"
