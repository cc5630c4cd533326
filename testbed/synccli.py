"""``python -m testbed.synccli sync-back SPEC.json``: one sync-back as its own process.

The kill-and-resume test and the sync benchmark SIGKILL this process (and its SSH
clients) at random points, then resume with the same run id. SPEC is
``{"plan": SyncPlan.to_dict(), "clone": Endpoint fields, "prod": Endpoint fields,
"run_id", "on_error"?, "transport"?}``; the report is printed as JSON on success.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Sequence

from workers.engines.endpoint import Endpoint
from workers.engines.events import PrintEmitter
from workers.engines.sync import DEFAULT_TRANSPORT, SyncError, SyncPlan, sync_back


def main(argv: Sequence[str]) -> int:
    if len(argv) != 2 or argv[0] != "sync-back":
        print("usage: python -m testbed.synccli sync-back SPEC.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[1]).read_text())
    try:
        report = sync_back(SyncPlan.from_dict(spec["plan"]), Endpoint(**spec["clone"]), Endpoint(**spec["prod"]),
                           run_id=spec["run_id"], emitter=PrintEmitter(), on_error=spec.get("on_error", "rollback"),
                           transport=spec.get("transport", DEFAULT_TRANSPORT))
    except SyncError as exc:
        print(f"sync-back failed: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report.to_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
