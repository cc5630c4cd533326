"""live_sync_files: repeated delta passes while the source keeps writing for a while; lag is
reported every pass and shrinks to zero; the destination ends byte-identical with the source's
mtimes. A source that never stops writing fails at the time limit, with the lag it had left."""
from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from tests.support.sync import endpoint, host_sha, put, twin_files
from workers.engines.events import RecordingEmitter
from workers.engines.sync import SyncError, live_sync_files


def writer(host: Any, path: str, times: int, every: float, stop: threading.Event) -> threading.Thread:
    def run() -> None:
        for n in range(times):
            if stop.is_set():
                return
            host.run(f"printf 'write {n:06d}' | dd of='{path}' bs=1 seek={4096 * (n % 50) + 7} conv=notrunc "
                     f"2>/dev/null")
            time.sleep(every)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_live_sync_files_converges_while_source_writes(make_test_host: Any) -> None:
    src, dst = make_test_host("production"), make_test_host("clone")
    files = {f"/srv/live/f{i}.dat": (300_000, [i, 20 + i]) for i in range(4)}
    twin_files(src, dst, files)  # dst holds stale copies of the source's files
    stop = threading.Event()
    t = writer(src, "/srv/live/f1.dat", 4, 0.4, stop)
    em = RecordingEmitter()
    report = live_sync_files(endpoint(src, "src"), endpoint(dst, "dst"), ["/srv/live"], time_limit=60,
                             emitter=em, settle=0.3)
    t.join()
    # the writer may have finished after the last pass began: one more call must find nothing to move
    report2 = live_sync_files(endpoint(src, "src"), endpoint(dst, "dst"), ["/srv/live"], time_limit=60)
    assert report.ok and report2.ok
    assert report.passes[0].moved_files == 4 and report.passes[-1].moved_files == 0
    assert len(report.passes) >= 2
    lags = [e.payload["lag_files"] for e in em.of_kind("progress") if e.payload["unit"] == "lag_files"]
    assert lags[0] == 4 and lags[-1] == 0
    for p in files:
        assert host_sha(src, p) == host_sha(dst, p)
        assert src.run(f"stat -c %Y {p}").stdout == dst.run(f"stat -c %Y {p}").stdout
    # only differing blocks travelled in the first pass (2 damaged 4 KiB blocks per file)
    assert report.passes[0].data_bytes <= 4 * 2 * 4096 + 4 * 4096


def test_live_sync_files_fails_at_time_limit(make_test_host: Any) -> None:
    src, dst = make_test_host("production"), make_test_host("clone")
    put(src, "/srv/busy/hot.dat", b"x" * 100_000)
    put(dst, "/srv/busy/hot.dat", b"y" * 100_000)
    stop = threading.Event()
    t = writer(src, "/srv/busy/hot.dat", 10_000, 0.05, stop)
    try:
        with pytest.raises(SyncError, match=r"not converged within 3s: 1 file\(s\)") as info:
            live_sync_files(endpoint(src, "src"), endpoint(dst, "dst"), ["/srv/busy"], time_limit=3)
        assert info.value.report.lag_files == 1 and len(info.value.report.passes) >= 2
    finally:
        stop.set()
        t.join()
