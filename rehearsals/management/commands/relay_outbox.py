"""Send the dispatch outbox's unsent tasks (what the web and worker processes do by themselves after
a failed send, and Celery beat every reaper interval); ``--every N`` keeps doing it."""
from rehearsals.dispatch import relay_pending, unsent_count
from rehearsals.management.repeating import RepeatingCommand


class Command(RepeatingCommand):
    help = "Send the tasks the broker could not take yet (the dispatch outbox)."

    def run_once(self) -> None:
        sent = relay_pending()
        self.stdout.write(f"sent {sent}; {unsent_count()} still waiting for the broker")
