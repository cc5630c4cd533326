"""A housekeeping command that Celery beat normally runs: once, or ``--every N`` seconds until stopped, for a
deployment without beat."""
import time

from django.core.management.base import BaseCommand, CommandError


class RepeatingCommand(BaseCommand):
    """Subclasses define ``run_once()``: one round of the housekeeping."""

    def add_arguments(self, parser):
        parser.add_argument("--every", type=float, default=0,
                            help="repeat every this many seconds until stopped (default: once)")

    def handle(self, *args, every: float = 0, **options):
        if every < 0:
            raise CommandError("--every must be a number of seconds, 0 or more")
        while True:
            self.run_once()
            if not every:
                return
            time.sleep(every)
