"""The demo's damage scenario, built offline on a database home (usually inside a rootfs).

Timeline it reproduces: datafiles filled -> backup export taken -> production keeps
writing (to SOME files only: merely newer; and a few rows to the files about to be damaged)
-> a bad disk damages pages of a FEW OTHER files (the real corruption). It returns which file is which so tests assert exact lists.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from .storage import Database, corrupt_pages

NAMES = ["accounts", "order lines", "customers", "orders", "inventory", "invoices", "payments", "audit"]


@dataclass
class Scenario:
    """What ``build_scenario`` did. Paths are on the machine that built it; ``in_host`` maps them."""

    home: Path
    export_path: Path
    export_lsn: int
    final_lsn: int
    files: dict[str, Path]
    newer_files: list[str]
    corrupted_files: dict[str, list[int]]
    untouched_files: list[str]
    rows_per_file: int
    extra_rows: int
    late_rows: int = 0             # rows written to each corrupted file after the backup
    rootfs: Path | None = None
    notes: list[str] = field(default_factory=list)

    def in_host(self, path: Path) -> str:
        """Path as seen inside the host (relative to its rootfs)."""
        if self.rootfs is None:
            return str(path)
        return "/" + str(Path(path).relative_to(self.rootfs))

    def datafile_in_host(self, name: str) -> str:
        return self.in_host(self.files[name])


def _value(rng: random.Random, name: str, i: int, size: int) -> str:
    return f"{name}#{i}:" + "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(size))


def build_scenario(home: Path, *, n_files: int = 6, pages_per_file: int = 48, rows_per_file: int = 400,
                   n_newer: int = 2, n_corrupted: int = 2, extra_rows: int = 150, late_rows: int = 40,
                   value_size: int = 80,
                   export_path: Path | None = None, rootfs: Path | None = None, seed: int = 20261125) -> Scenario:
    """Create ``n_files`` datafiles under ``home`` and play the timeline above.

    One corrupted file is always "order lines" (a name with a space). ``pages_per_file``
    x 8 KiB is the initial datafile size (bench: raise it, files autoextend as needed).
    """
    if n_files < n_newer + n_corrupted + 1:
        raise ValueError("need at least one untouched file besides the newer and corrupted ones")
    names = (NAMES + [f"table{i:02d}" for i in range(len(NAMES), n_files)])[:n_files]
    rng = random.Random(seed)
    home = Path(home)
    export_path = Path(export_path) if export_path else home.parent.parent / "backups" / "minidb" / "latest.tar.gz"
    corrupted = [names[1]] + names[len(names) - (n_corrupted - 1):] if n_corrupted > 1 else [names[1]]
    newer = [n for n in names if n not in corrupted][1:1 + n_newer]
    untouched = [n for n in names if n not in corrupted and n not in newer]
    with Database(home, create=True, fsync=False) as db:
        for name in names:
            db.create_file(name, pages_per_file)
        for name in names:
            for i in range(rows_per_file):
                db.put(name, f"{name[:3]}-{i:06d}", _value(rng, name, i, value_size))
        export_lsn = db.export(export_path)
        for name in newer:
            for i in range(extra_rows):
                if i % 3 == 0:  # updates of existing rows as well as new rows
                    db.put(name, f"{name[:3]}-{i:06d}", _value(rng, name + "-upd", i, value_size))
                else:
                    db.put(name, f"{name[:3]}-new-{i:06d}", _value(rng, name, i, value_size))
        # The files about to be damaged took writes after the backup too: restoring them from the
        # backup loses those rows until the catch-up replays the write log into them.
        for name in corrupted:
            for i in range(late_rows):
                db.put(name, f"{name[:3]}-late-{i:06d}", _value(rng, name + "-late", i, value_size))
        final_lsn = db.next_lsn - 1
        used_pages = {name: sorted({p for p in db.files[db.by_name[name]].index.values()}) for name in names}
        files = {name: db.datafile_path(name) for name in names}
    bad: dict[str, list[int]] = {}
    for name in corrupted:
        pages = sorted(rng.sample(used_pages[name], k=min(2, len(used_pages[name]))))
        corrupt_pages(files[name], pages, seed=rng.randrange(1 << 30))
        bad[name] = pages
    return Scenario(home=home, export_path=export_path, export_lsn=export_lsn, final_lsn=final_lsn, files=files,
                    newer_files=newer, corrupted_files=bad, untouched_files=untouched,
                    rows_per_file=rows_per_file, extra_rows=extra_rows, late_rows=late_rows, rootfs=rootfs)
