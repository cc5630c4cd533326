#!/usr/bin/env python3
"""Benchmark: the log viewer of the rehearsal page in Debian's chromium (Playwright), for a step run of 100,000
lines (a real ``command`` step, ``seq``, streamed live through the event path) and one of 1,000,000 lines (rows
written straight into the table: the viewing is measured, not the writing).

Setup (a private data dir and SQLite database unless DATABASE_URL is set): a real sshd test host as production,
``manage.py serve`` (daphne + the in-process worker) as the dashboard, chromium logged in as an ops user.

Measured, for each log size:
  1. live follow (100,000 only): the step runs while the page is open and following; how long after the step
     ended (its ``finished_at``) the last line was on screen (target <= 1 s);
  2. open: a fresh page load until the page is interactive (the viewer's toolbar is there) and until the last
     line is visible in the viewport (target < 1 s);
  3. scroll to the first line: Home in the viewer until line 1 is drawn (target < 1 s);
  4. whole-log search: Enter in the search box until the hit count is shown, and the first hit drawn
     (target < 1 s at 100,000, < 3 s at 1,000,000); the API's search alone is timed too;
  5. JS heap after those and after jumping to 30 places across the log (CDP, after a garbage collection;
     target < 100 MB);
  6. baseline in the same run: fetching the whole raw log (the download) with the same session.

Usage:  .venv/bin/python bench/bench_log_viewer.py [--lines 100000] [--million] [--repeat 3]
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CHROMIUM = os.environ.get("UNDERSTUDY_CHROMIUM", "/usr/bin/chromium")
PASSWORD = "bench-pass-123"

# In the page: every animation frame, note when the step run's last known seq is first drawn in the viewport.
WATCH = """
window.__bench = { lastVisibleAt: {}, interactiveAt: null };
(function loop() {
  const now = performance.now();
  if (!window.__bench.interactiveAt && document.querySelector('.lv-toolbar')) window.__bench.interactiveAt = now;
  for (const v of Object.values((window.understudyDebug || {}).viewers || {})) {
    const vp = v.viewport.getBoundingClientRect();
    for (const r of v.rows.children) {
      const b = r.getBoundingClientRect();
      if (b.top >= vp.top - 1 && b.bottom <= vp.bottom + 1 && !r.classList.contains('lv-loading')) {
        const seq = Number(r.dataset.seq);
        const key = v.stepRun + ':' + seq;
        if (!(key in window.__bench.lastVisibleAt)) window.__bench.lastVisibleAt[key] = Date.now();
      }
    }
  }
  requestAnimationFrame(loop);
})();
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=100_000, help="lines of the live command step")
    ap.add_argument("--million", action="store_true", help="also a step run of 1,000,000 lines")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-log-viewer-"))
    os.environ["UNDERSTUDY_DATA_DIR"] = str(work / "var")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "understudy.settings")
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")   # Playwright's sync API beside the ORM
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth.models import Group, Permission, User
    from django.core.management import call_command

    from incidents.models import Incident
    from inventory.models import Hypervisor, ProductionHost
    from rehearsals import transitions
    from rehearsals.models import StepRun
    from runbooks.models import Runbook, StepSpec
    from testbed.host import TestHost
    from tests.support.logs import bulk_log

    call_command("migrate", verbosity=0)
    print(f"database: {settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]}")
    host = TestHost(work / "prod", hostname="bench-production", scenario=True).start()
    server = None
    try:
        ops = User.objects.create_user("bench-ops", password=PASSWORD)
        ops.groups.add(Group.objects.get_or_create(name="ops")[0])
        ops.user_permissions.add(Permission.objects.get(codename="run_production"))
        prod = ProductionHost.objects.create(name=host.hostname, address=host.address, port=host.port,
                                             user=host.user, key_path=str(host.client_key_path),
                                             host_key=host.host_public_key)
        hv = Hypervisor.objects.create(name="bench", libvirt_uri="test:///default", queue="bench-log-viewer",
                                       storage_dir=str(work / "hv"))
        incident = Incident.objects.create(title="bench", production_host=prod, broken_service="minidb",
                                           opened_by=ops)

        def rehearsal(title: str, command: str):
            runbook = Runbook.objects.create(name=title, version=1)
            StepSpec.objects.create(runbook=runbook, position=1, kind="command", title=title, target="production",
                                    params={"command": command})
            return transitions.create_rehearsal(incident, runbook, hv, ops, mode="production",
                                                override_reason="benchmark of the log viewer: a step that prints")

        live = rehearsal(f"print {args.lines:,} lines", f"seq 1 {args.lines}")
        million = None
        if args.million:
            million = rehearsal("1,000,000 lines", "true")
            run = StepRun.objects.create(rehearsal=million, step=million.runbook.steps.get(),
                                         status=StepRun.Status.SUCCEEDED)
            t = time.perf_counter()
            bulk_log(run, 1_000_000, phases={1: "prepare", 200_001: "copy", 900_001: "verify"})
            StepRun.objects.filter(pk=run.pk).update(finished_at=dt.datetime.now(dt.timezone.utc))
            print(f"1,000,000 rows written in {time.perf_counter() - t:.1f} s (bulk insert)")

        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        server = subprocess.Popen([sys.executable, "manage.py", "serve", "--port", str(port)], cwd=ROOT,
                                  stdout=open(work / "server.log", "wb"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((work / "server.log").read_text()[-3000:])
                time.sleep(0.2)

        from playwright.sync_api import sync_playwright

        results = []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
                "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"])
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            context.add_init_script(WATCH)
            page = context.new_page()
            page.goto(f"{base}/login/")
            page.fill("input[name=username]", "bench-ops")
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(f"{base}/")

            # 1. live follow
            page.goto(f"{base}/rehearsals/{live.pk}/")
            page.wait_for_selector("#live.on")
            page.click("#btn-start")
            t = time.perf_counter()
            while True:
                run = StepRun.objects.filter(rehearsal=live).first()
                if run and run.status in {StepRun.Status.SUCCEEDED, StepRun.Status.FAILED}:
                    break
                time.sleep(0.1)
            assert run.status == StepRun.Status.SUCCEEDED, run.error
            step_seconds = time.perf_counter() - t
            key = f"{run.pk}:{run.last_seq}"
            page.wait_for_function(f"() => '{key}' in window.__bench.lastVisibleAt", timeout=60_000)
            seen = page.evaluate(f"() => window.__bench.lastVisibleAt['{key}']") / 1000
            lag = seen - run.finished_at.timestamp()
            print(f"live: {run.last_seq:,} events in {step_seconds:.1f} s (start to end of the step)")
            results.append((f"{args.lines:,}", "live follow: last line on screen after the step ended",
                            [lag], 1.0))

            def measure(rehearsal_id, label, query, search_target):
                run = StepRun.objects.get(rehearsal_id=rehearsal_id)
                opened, interactive, first, search_ui, search_api, raw = [], [], [], [], [], []
                heap_after = []
                for _ in range(args.repeat):
                    pg = context.new_page()
                    cdp = context.new_cdp_session(pg)
                    t0 = time.time()
                    pg.goto(f"{base}/rehearsals/{rehearsal_id}/")
                    key = f"{run.pk}:{run.last_seq}"
                    pg.wait_for_function(f"() => '{key}' in window.__bench.lastVisibleAt", timeout=60_000)
                    nav = pg.evaluate("() => performance.timeOrigin")
                    opened.append((pg.evaluate(f"() => window.__bench.lastVisibleAt['{key}']") - nav) / 1000)
                    interactive.append(pg.evaluate("() => window.__bench.interactiveAt") / 1000)
                    viewer = pg.locator(f".lv[data-step-run='{run.pk}']")
                    # 3. to the first line
                    viewer.locator(".lv-viewport").focus()
                    t = time.perf_counter()
                    pg.keyboard.press("Home")
                    viewer.locator(".lv-row[data-seq='1']:not(.lv-loading)").wait_for()
                    first.append(time.perf_counter() - t)
                    # 4. search over the whole log
                    box = viewer.locator(".lv-search")
                    box.fill(query)
                    t = time.perf_counter()
                    box.press("Enter")
                    pg.wait_for_function(
                        f"() => /\\d+ \\/ /.test(document.querySelector(\".lv[data-step-run='{run.pk}'] .lv-hits\")"
                        f".textContent) && document.querySelector(\".lv[data-step-run='{run.pk}'] .lv-current mark\")")
                    search_ui.append(time.perf_counter() - t)
                    hits = viewer.locator(".lv-hits").inner_text()
                    t = time.perf_counter()
                    resp = pg.request.get(f"{base}/api/v1/step-runs/{run.pk}/log/search/?q={query}")
                    search_api.append(time.perf_counter() - t)
                    assert resp.ok
                    # 5. heap: after jumping to 30 places across the log (pages loaded and dropped)
                    for i in range(30):
                        seq = 1 + (run.last_seq - 1) * i // 29
                        pg.evaluate(f"() => Object.values(window.understudyDebug.viewers)"
                                    f".find(v => v.stepRun === {run.pk}).goTo({seq})")
                        viewer.locator(f".lv-row[data-seq='{seq}']:not(.lv-loading)").wait_for()
                    cdp.send("HeapProfiler.collectGarbage")
                    cdp.send("Performance.enable")
                    metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
                    heap_after.append(metrics["JSHeapUsedSize"] / 2**20)
                    # 6. baseline: the whole raw log
                    t = time.perf_counter()
                    body = pg.request.get(f"{base}/api/v1/step-runs/{run.pk}/log/raw/").body()
                    raw.append(time.perf_counter() - t)
                    assert body.count(b"\n") >= run.last_seq - 10
                    pg.close()
                results.extend([
                    (label, "page interactive (viewer toolbar) after navigation", interactive, 1.0),
                    (label, "last line visible after navigation", opened, 1.0),
                    (label, "scroll to the first line (Home)", first, 1.0),
                    (label, f"whole-log search '{query}' ({hits}) in the page", search_ui, search_target),
                    (label, "  … the API's search alone", search_api, None),
                    (label, "JS heap after 30 jumps across the log (MB)", heap_after, 100.0),
                    (label, "baseline: fetch the whole raw log (download)", raw, None),
                ])

            measure(live.pk, f"{args.lines:,}", "4242", 1.0)
            if million is not None:
                measure(million.pk, "1,000,000", "error: disk 777", 3.0)
            browser.close()

        print()
        print("| lines | what | median | runs | target | ratio to target |")
        print("|---|---|---|---|---|---|")
        for lines, what, xs, target in results:
            m = median(xs)
            unit = "" if "MB" in what else " s"
            ratio = f"{m / target:.2f}" if target else "—"
            print(f"| {lines} | {what} | {m:.3f}{unit} | {', '.join(f'{x:.3f}' for x in xs)} | "
                  f"{target if target else '—'} | {ratio} |")
        by = {(lines, what.split(" (")[0]): median(xs) for lines, what, xs, _ in results}
        for lines in sorted({r[0] for r in results}):
            raw = by.get((lines, "baseline: fetch the whole raw log"))
            last = by.get((lines, "last line visible after navigation"))
            if raw and last:
                print(f"{lines} lines: opening at the tail takes {last / raw:.3f}× the time of fetching the raw log")
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
        host.stop()
        host.discard_rootfs()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
