"""The log viewer in a real browser against the real ASGI server and a real worker: a 100,000-line command step
opens at its tail and is searchable over the whole log; a socket cut mid-stream resumes with no line missing or
doubled; a line's permalink opens the page scrolled to it; the download has every line. Screenshots go to
``artifacts/`` (git-ignored)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from rehearsals.models import StepRun
from tests.support.browser import login
from tests.support.logs import bulk_log
from tests.support.tcpproxy import TcpProxy

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
MANUAL = {"kind": "manual", "params": {"instructions": "x"}}


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"log-viewer-{name}.png"), full_page=True)


def _page(browser, base):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.js_errors = errors
    login(page, base, "alice", "alice-pass-123")
    return page


def _visible_seqs(viewer) -> list[int]:
    """The seqs of the rows drawn inside the viewport's visible box."""
    return viewer.evaluate("""(el) => {
        const vp = el.querySelector('.lv-viewport').getBoundingClientRect();
        return [...el.querySelectorAll('.lv-row')].filter((r) => {
            const b = r.getBoundingClientRect();
            return b.top >= vp.top - 1 && b.bottom <= vp.bottom + 1;
        }).map((r) => Number(r.dataset.seq));
    }""")


@pytest.fixture
def viewed_run(users, make_rehearsal, host_row):
    """A finished step run whose log is 100,000 lines (written straight into the table: the viewing is tested)."""
    r = make_rehearsal(host_row, [MANUAL])
    run = StepRun.objects.create(rehearsal=r, step=r.runbook.steps.get(), status=StepRun.Status.SUCCEEDED)
    bulk_log(run, 100_000, phases={1: "prepare", 20_001: "copy"})
    return run


def test_a_100000_line_command_step_opens_at_its_tail_and_is_searchable(
        users, prod_host_row, worker_hypervisor, live_server_url, browser, make_production_run):
    r = make_production_run(prod_host_row, [{"kind": "command", "title": "count to 100,000",
                                            "params": {"command": "seq 1 100000"}}], on=worker_hypervisor)
    page = _page(browser, live_server_url)
    page.goto(f"{live_server_url}/rehearsals/{r.pk}/")
    expect(page.locator("#live")).to_have_text("live")
    page.click("#btn-start")
    step = page.locator("#steps > li").first
    expect(step.locator(".step-head .badge")).to_have_text("Succeeded", timeout=120_000)
    run = StepRun.objects.get(rehearsal=r)
    lines = run.events.filter(kind="log").count()
    assert lines >= 100_000
    # followed live to the end: the last line is on screen
    viewer = step.locator(".lv")
    expect(viewer.locator(".lv-text", has_text=re.compile(r"^100000$"))).to_be_visible(timeout=10_000)

    # a fresh page opens at the tail, without reading the log from the start
    fresh = _page(browser, live_server_url)
    asked = []
    fresh.on("request", lambda req: asked.append(req.url) if "/log" in req.url else None)
    fresh.goto(f"{live_server_url}/rehearsals/{r.pk}/")
    viewer = fresh.locator("#steps > li").first.locator(".lv")
    last = viewer.locator(".lv-text", has_text=re.compile(r"^100000$"))
    expect(last).to_be_visible(timeout=10_000)
    assert run.last_seq in _visible_seqs(viewer)
    assert viewer.locator(".lv-row").count() < 60, "only the visible rows are in the DOM"
    assert not any("after=0" in u for u in asked), asked
    _shot(fresh, "tail-100000")

    # search over the whole log: the hit count and the first hit, far above what was loaded
    expected = sum("4242" in str(i) for i in range(1, 100_001))
    viewer.locator(".lv-search").fill("4242")
    viewer.locator(".lv-search").press("Enter")
    expect(viewer.locator(".lv-hits")).to_have_text(f"1 / {expected}")
    hit = viewer.locator(".lv-row.lv-current")
    expect(hit).to_contain_text("4242")
    expect(hit.locator("mark")).to_have_text("4242")
    viewer.locator(".lv-search").press("Enter")
    expect(viewer.locator(".lv-hits")).to_have_text(f"2 / {expected}")
    expect(viewer.locator(".lv-row.lv-current .lv-text")).to_have_text("14242")
    viewer.locator(".lv-search").press("Shift+Enter")
    expect(viewer.locator(".lv-hits")).to_have_text(f"1 / {expected}")
    expect(viewer.locator("[role=status]")).to_contain_text(f"Match 1 of {expected}")
    _shot(fresh, "search")
    # and back to the bottom, following
    viewer.locator("button", has_text="Bottom").click()
    expect(last).to_be_visible()
    assert fresh.js_errors == [] and page.js_errors == []


def test_a_socket_cut_mid_stream_resumes_with_no_line_missing_or_doubled(
        users, prod_host_row, worker_hypervisor, live_server_url, browser, make_production_run):
    total = 40_000
    r = make_production_run(prod_host_row, [{"kind": "command", "title": "slow counter", "params": {
        "command": "for i in $(seq 0 39); do seq $((i*1000+1)) $((i*1000+1000)); sleep 0.3; done"}}],
        on=worker_hypervisor)
    port = int(live_server_url.rsplit(":", 1)[1])
    proxy = TcpProxy("127.0.0.1", port)
    base = f"http://127.0.0.1:{proxy.port}"
    page = _page(browser, base)
    received: list[int] = []
    sockets = []

    def on_socket(ws):
        sockets.append(ws)

        def on_frame(payload):
            msg = json.loads(payload)
            if msg.get("type") == "batch":
                received.extend(f["seq"] for f in msg["frames"] if f.get("type") == "event" and f["kind"] == "log")
        ws.on("framereceived", on_frame)
    page.on("websocket", on_socket)
    try:
        page.goto(f"{base}/rehearsals/{r.pk}/")
        expect(page.locator("#live")).to_have_text("live")
        page.click("#btn-start")
        page.wait_for_function("() => document.querySelectorAll('.lv-row').length > 0", timeout=60_000)
        page.wait_for_timeout(100)
        while len(received) < 8_000:
            page.wait_for_timeout(50)
        cut_at = len(received)
        assert proxy.kill_all() > 0
        expect(page.locator("#live")).to_have_text("reconnecting…", timeout=5_000)
        expect(page.locator("#live")).to_have_text("live", timeout=15_000)
        step = page.locator("#steps > li").first
        # scrolling up pauses following; what arrives meanwhile is counted on a button that brings it back
        viewer = step.locator(".lv")
        viewer.locator(".lv-viewport").hover()
        page.mouse.wheel(0, -2000)
        expect(viewer.locator(".lv-follow")).to_have_attribute("aria-pressed", "false")
        expect(viewer.locator(".lv-new")).to_have_text(re.compile(r"^↓ [\d,]+ new lines?$"), timeout=10_000)
        expect(viewer.locator("[role=status]")).to_contain_text("Paused")
        viewer.locator(".lv-new").click()
        expect(viewer.locator(".lv-follow")).to_have_attribute("aria-pressed", "true")
        expect(step.locator(".step-head .badge")).to_have_text("Succeeded", timeout=120_000)
        run = StepRun.objects.get(rehearsal=r)
        log_seqs = list(run.events.filter(kind="log").order_by("seq").values_list("seq", flat=True))
        assert len(log_seqs) >= total   # the seq lines and the step's own info lines
        page.wait_for_function(f"() => (window.understudyDebug.lastSeq[{run.pk}] || 0) >= {run.last_seq}",
                               timeout=20_000)
        assert len(sockets) >= 2 and cut_at < total, (len(sockets), cut_at)
        assert len(received) == len(set(received)), "a line came twice"
        assert sorted(received) == log_seqs, "a line is missing"
        expect(viewer.locator(".lv-text", has_text=re.compile(r"^40000$"))).to_be_visible()
        _shot(page, "resumed")
        assert page.js_errors == []
    finally:
        proxy.close()


def test_a_line_permalink_opens_the_page_scrolled_to_it(viewed_run, live_server_url, browser):
    page = _page(browser, live_server_url)
    page.goto(f"{live_server_url}/rehearsals/{viewed_run.rehearsal_id}/#sr{viewed_run.pk}-L54321")
    viewer = page.locator(".lv").first
    target = viewer.locator(".lv-row.lv-current")
    expect(target).to_have_attribute("data-seq", "54321", timeout=10_000)
    expect(target).to_contain_text("line 54321 ")
    assert 54321 in _visible_seqs(viewer)
    expect(viewer.locator(".lv-follow")).to_have_attribute("aria-pressed", "false")
    _shot(page, "permalink")
    # clicking another line's number makes its link the address
    other = viewer.locator(".lv-row[data-seq='54325'] a.lv-n")
    other.click()
    assert page.url.endswith(f"#sr{viewed_run.pk}-L54325")
    expect(viewer.locator(".lv-row.lv-current")).to_have_attribute("data-seq", "54325")
    # a link to another line followed on the same page
    page.evaluate(f"() => {{ location.hash = '#sr{viewed_run.pk}-L777'; }}")
    expect(viewer.locator(".lv-row.lv-current")).to_have_attribute("data-seq", "777")
    assert 777 in _visible_seqs(viewer)
    assert page.js_errors == []


def test_scrolling_sections_timestamps_and_the_download(viewed_run, live_server_url, browser, tmp_path):
    page = _page(browser, live_server_url)
    page.goto(f"{live_server_url}/rehearsals/{viewed_run.rehearsal_id}/")
    expect(page.locator("#live")).to_have_text("live")
    viewer = page.locator(".lv").first
    expect(viewer.locator(".lv-row[data-seq='100000']")).to_be_visible(timeout=10_000)
    # the stderr line is marked in text too, its ANSI colour drawn, not printed
    expect(viewer.locator(".lv-row[data-seq='100000'] .lv-err")).to_have_text("err")
    ok = viewer.locator(".lv-row[data-seq='99999'] .lv-text span")
    expect(ok).to_have_text("ok")
    assert ok.evaluate("(e) => getComputedStyle(e).color") == "rgb(74, 222, 128)"
    assert "\x1b" not in viewer.locator(".lv-row[data-seq='99999']").inner_text()
    # top: the first page is read by seq; the phase is a section with its duration
    viewer.locator(".lv-viewport").focus()
    page.keyboard.press("Home")
    expect(viewer.locator(".lv-row[data-seq='1'] .lv-section")).to_contain_text("prepare")
    expect(viewer.locator(".lv-row[data-seq='1'] .lv-dur")).to_contain_text("20.0 s")
    expect(viewer.locator(".lv-row[data-seq='2']")).to_contain_text("line 2 ")
    # collapse it: the next row is the next section
    viewer.locator(".lv-row[data-seq='1'] .lv-section").click()
    expect(viewer.locator(".lv-row[data-seq='1'] .lv-section")).to_have_attribute("aria-expanded", "false")
    expect(viewer.locator(".lv-row").nth(1)).to_have_attribute("data-seq", "20001")
    viewer.locator(".lv-row[data-seq='1'] .lv-section").click()
    expect(viewer.locator(".lv-row").nth(1)).to_have_attribute("data-seq", "2")
    # timestamps
    viewer.get_by_label("timestamps").check()
    expect(viewer.locator(".lv-row[data-seq='2'] .lv-time")).to_have_text(re.compile(r"^\d\d:\d\d:\d\d\.\d{3}$"))
    # next error: the first stderr line after the top
    viewer.locator("button", has_text="Next error").click()
    expect(viewer.locator(".lv-row.lv-current")).to_have_attribute("data-seq", "1000")
    _shot(page, "sections")
    # the download has every line, in order
    with page.expect_download() as got:
        viewer.locator("a.lv-download").click()
    path = tmp_path / "log.txt"
    got.value.save_as(path)
    lines = path.read_text().split("\n")
    assert lines[-1] == "" and len(lines) - 1 == 100_000 - 2
    assert [int(x.split()[1]) for x in lines[:-1]] == [i for i in range(1, 100_001) if i not in (1, 20_001)]
    assert page.js_errors == []


def test_a_megabyte_line_is_shown_cut_with_show_all(users, make_rehearsal, host_row, live_server_url, browser):
    r = make_rehearsal(host_row, [MANUAL])
    run = StepRun.objects.create(rehearsal=r, step=r.runbook.steps.get(), status=StepRun.Status.SUCCEEDED)
    huge = "y" * (1 << 20) + "THE END"
    bulk_log(run, 3, lambda i: (huge, "stdout") if i == 2 else (f"short {i}", "stdout"))
    page = _page(browser, live_server_url)
    page.goto(f"{live_server_url}/rehearsals/{r.pk}/")
    row = page.locator(".lv-row[data-seq='2']")
    expect(row.locator(".lv-showall")).to_contain_text("1,048,583")
    assert len(row.locator(".lv-text").inner_text()) == 16 * 1024
    row.locator(".lv-showall").click()
    expect(page.locator(".lv-full-text")).to_contain_text("THE END")
    assert len(page.locator(".lv-full-text").inner_text()) == len(huge)
    expect(page.locator(".lv-row[data-seq='3']")).to_contain_text("short 3")
    assert page.js_errors == []
