"""minidb: an honest little page-based database, the "broken service" of the demo.

Why it exists: the product's diff step must tell *corrupted on production* from
*merely newer on production*, and its catch-up step must parse a vendor tool's lag
output. A real (tiny) database with 8 KiB checksummed pages, a write log with LSNs,
a DBVERIFY-like checker, a logical export, a deterministic re-init and a log replay
makes those steps real instead of mocked.

Pure stdlib, relative imports only: the same package is imported here as
``testbed.minidb`` and inside test hosts as ``minidb`` (from /opt/minidb).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .storage import (
    PAGE_SIZE,
    Database,
    MiniDBError,
    corrupt_pages,
    dump_rows,
    export_database,
    reinit_database,
    replay_wal,
    verify_file,
    verify_paths,
)
from .scenario import Scenario, build_scenario

CLI_COMMANDS = {
    "minidb-service": "main_service",
    "minidb-put": "main_put",
    "minidb-get": "main_get",
    "minidb-load": "main_load",
    "minidb-export": "main_export",
    "minidb-reinit": "main_reinit",
    "minidb-replay": "main_replay",
    "minidb-dump": "main_dump",
    "minidb-init": "main_init",
    "dbverify": "main_dbverify",
}

__all__ = [
    "PAGE_SIZE", "Database", "MiniDBError", "Scenario", "build_scenario", "corrupt_pages", "dump_rows",
    "export_database", "reinit_database", "replay_wal", "verify_file", "verify_paths", "install_into",
    "CLI_COMMANDS",
]


def install_into(root: Path) -> None:
    """Copy this package to ``root``/opt/minidb/minidb and write CLI wrappers in /usr/local/bin."""
    root = Path(root)
    pkg_dest = root / "opt" / "minidb" / "minidb"
    if pkg_dest.exists():
        shutil.rmtree(pkg_dest)
    pkg_dest.mkdir(parents=True)
    here = Path(__file__).parent
    for src in here.glob("*.py"):
        shutil.copy2(src, pkg_dest / src.name)
    bindir = root / "usr" / "local" / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    for cmd, func in CLI_COMMANDS.items():
        path = bindir / cmd
        path.write_text(
            "#!/usr/bin/python3\n"
            "import sys\n"
            "sys.path.insert(0, '/opt/minidb')\n"
            f"from minidb.cli import {func}\n"
            f"sys.exit({func}())\n"
        )
        os.chmod(path, 0o755)
    (root / "etc" / "minidb").mkdir(parents=True, exist_ok=True)
