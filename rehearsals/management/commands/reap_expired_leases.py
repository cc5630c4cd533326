"""Fail the step runs whose worker stopped renewing its lease (what Celery beat runs every
UNDERSTUDY_REAPER_SECONDS); ``--every N`` keeps doing it, for a deployment without beat."""
from rehearsals.leases import reap_expired_leases
from rehearsals.management.repeating import RepeatingCommand


class Command(RepeatingCommand):
    help = "Mark running steps whose worker lease expired as failed (worker lost); they can be retried."

    def run_once(self) -> None:
        for run in reap_expired_leases():
            self.stdout.write(f"step run {run.pk} (rehearsal #{run.rehearsal_id}): {run.error}")
