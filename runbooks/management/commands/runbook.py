"""``manage.py runbook export NAME [--version N]`` / ``manage.py runbook import FILE``."""
from __future__ import annotations

import json
import sys

from django.core.management.base import BaseCommand, CommandError

from runbooks.documents import InvalidRunbook, import_runbook, runbook_to_dict
from runbooks.models import Runbook


class Command(BaseCommand):
    help = "Export a runbook version as JSON, or import one (validated; creates the next version)."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        exp = sub.add_parser("export")
        exp.add_argument("name")
        exp.add_argument("--version", type=int)
        imp = sub.add_parser("import")
        imp.add_argument("file", help="JSON file, or - for standard input")

    def handle(self, *args, action, **opts):
        if action == "export":
            qs = Runbook.objects.filter(name=opts["name"]).order_by("-version")
            if opts.get("version"):
                qs = qs.filter(version=opts["version"])
            runbook = qs.first()
            if runbook is None:
                raise CommandError(f"no runbook named {opts['name']!r}"
                                   + (f" with version {opts['version']}" if opts.get("version") else ""))
            self.stdout.write(json.dumps(runbook_to_dict(runbook), indent=2))
            return
        try:
            raw = sys.stdin.read() if opts["file"] == "-" else open(opts["file"], encoding="utf-8").read()
        except OSError as exc:
            raise CommandError(f"cannot read {opts['file']}: {exc.strerror}")
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise CommandError(f"{opts['file']} is not valid JSON: {exc}")
        try:
            runbook = import_runbook(data)
        except InvalidRunbook as exc:
            raise CommandError(str(exc))
        self.stdout.write(f"imported {runbook} with {runbook.steps.count()} steps")
