#!/usr/bin/env python3
"""Benchmark: rendering the incident report of a run whose steps logged 100,000 lines each.

Setup (this machine, a private data dir and SQLite database): a real sshd test host as
production, the in-process worker, and a runbook of --steps command steps, each printing
--lines lines (``seq``), run through the state machine (a production run with an override:
the steps only print) so the log rows are the real ones the event sink wrote.

Measured (median of --repeat):
  1. HTML: build the report's snapshot from the database + render the HTML body (target < 2 s);
  2. PDF: the same snapshot through WeasyPrint (target < 10 s);
  3. Markdown export;
  4. baseline: reading just ONE step's whole log from the database (what an excerpt avoids).

Usage:  .venv/bin/python bench/bench_report.py [--lines 100000] [--steps 3] [--repeat 3]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def timed(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=100_000)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-report-"))
    os.environ["UNDERSTUDY_DATA_DIR"] = str(work / "var")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "understudy.settings")
    import django

    django.setup()
    import logging

    logging.getLogger("fontTools").setLevel(logging.WARNING)  # WeasyPrint's font subsetting chatter
    from django.contrib.auth.models import Group, Permission, User
    from django.core.management import call_command

    from incidents.models import Incident
    from inventory.models import Hypervisor, ProductionHost
    from rehearsals import transitions
    from rehearsals.models import StepEvent, StepRun
    from reports import data, render
    from runbooks.models import Runbook, StepSpec
    from testbed.host import TestHost
    from workers.inprocess import start_inprocess_worker

    call_command("migrate", verbosity=0)
    host = TestHost(work / "prod", hostname="bench-production", scenario=True).start()
    try:
        ops = User.objects.create_user("bench-ops")
        ops.groups.add(Group.objects.get_or_create(name="ops")[0])
        ops.user_permissions.add(Permission.objects.get(codename="run_production"))
        prod = ProductionHost.objects.create(name=host.hostname, address=host.address, port=host.port,
                                             user=host.user, key_path=str(host.client_key_path),
                                             host_key=host.host_public_key)
        hv = Hypervisor.objects.create(name="bench", libvirt_uri="test:///default", queue="bench-report",
                                       storage_dir=str(work / "hv"))
        start_inprocess_worker([hv.queue])
        incident = Incident.objects.create(title="bench", production_host=prod, broken_service="minidb",
                                           opened_by=ops, restoration_target_minutes=60)
        runbook = Runbook.objects.create(name="bench report", version=1)
        for i in range(1, args.steps + 1):
            StepSpec.objects.create(runbook=runbook, position=i, kind="command", title=f"print {args.lines} lines",
                                    target="production",
                                    params={"command": f"seq 1 {args.lines} | sed 's/^/log line of step {i}: /'"})
        # a production run on the test host: the steps only print, and the logs are what is measured
        r = transitions.create_rehearsal(incident, runbook, hv, ops, mode="production",
                                         override_reason="benchmark of the report: steps that only print")
        t0 = time.perf_counter()
        for i in range(args.steps):
            run = transitions.start(r, ops) if i == 0 else transitions.advance(r, ops)
            while StepRun.objects.get(pk=run.pk).status not in {StepRun.Status.SUCCEEDED, StepRun.Status.FAILED}:
                time.sleep(0.2)
            r.refresh_from_db()
        run_seconds = time.perf_counter() - t0
        lines = StepEvent.objects.filter(step_run__rehearsal=r, kind="log").count()
        statuses = sorted(set(StepRun.objects.filter(rehearsal=r).values_list("status", flat=True)))
        assert statuses == [StepRun.Status.SUCCEEDED], statuses
        print(f"run: {args.steps} steps, {lines:,} log rows stored in {run_seconds:.1f} s")

        html_s, html = timed(lambda: render.html_body(data.build(r)), args.repeat)
        snapshot = data.build(r)
        pdf_s, pdf = timed(lambda: render.pdf(snapshot), args.repeat)
        pdf_total_s, _ = timed(lambda: render.pdf(data.build(r)), args.repeat)
        md_s, _ = timed(lambda: render.markdown(data.build(r)), args.repeat)
        first = StepRun.objects.filter(rehearsal=r).order_by("step__position").first()
        whole_s, rows = timed(lambda: len(list(StepEvent.objects.filter(step_run=first, kind="log")
                                               .values_list("payload", flat=True))), args.repeat)
        print()
        print("| what | median | target | ratio to target |")
        print("|---|---|---|---|")
        print(f"| HTML (snapshot from the DB + render), {len(html):,} chars | {html_s:.3f} s | 2 s | "
              f"{html_s / 2:.2f} |")
        print(f"| PDF from the snapshot (WeasyPrint), {len(pdf):,} bytes | {pdf_s:.3f} s | 10 s | {pdf_s / 10:.2f} |")
        print(f"| PDF including the snapshot | {pdf_total_s:.3f} s | 10 s | {pdf_total_s / 10:.2f} |")
        print(f"| Markdown (snapshot + render) | {md_s:.3f} s | — | — |")
        print(f"| baseline: read one step's whole log ({rows:,} lines) | {whole_s:.3f} s | — | "
              f"HTML report = {html_s / whole_s:.2f}× of it |")
    finally:
        host.stop()
        host.discard_rootfs()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
