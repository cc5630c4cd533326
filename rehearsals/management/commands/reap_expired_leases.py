"""Fail the step runs whose worker stopped renewing its lease (what Celery beat runs every
UNDERSTUDY_REAPER_SECONDS); ``--every N`` keeps doing it, for a deployment without beat."""
import time

from django.core.management.base import BaseCommand, CommandError

from rehearsals.leases import reap_expired_leases


class Command(BaseCommand):
    help = "Mark running steps whose worker lease expired as failed (worker lost); they can be retried."

    def add_arguments(self, parser):
        parser.add_argument("--every", type=float, default=0,
                            help="repeat every this many seconds until stopped (default: once)")

    def handle(self, *args, every: float = 0, **options):
        if every < 0:
            raise CommandError("--every must be a number of seconds, 0 or more")
        while True:
            for run in reap_expired_leases():
                self.stdout.write(f"step run {run.pk} (rehearsal #{run.rehearsal_id}): {run.error}")
            if not every:
                return
            time.sleep(every)
