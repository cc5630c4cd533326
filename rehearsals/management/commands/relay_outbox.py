"""Send the dispatch outbox's unsent tasks (what the web and worker processes do by themselves after
a failed send, and Celery beat every reaper interval); ``--every N`` keeps doing it."""
import time

from django.core.management.base import BaseCommand, CommandError

from rehearsals.dispatch import relay_pending, unsent_count


class Command(BaseCommand):
    help = "Send the tasks the broker could not take yet (the dispatch outbox)."

    def add_arguments(self, parser):
        parser.add_argument("--every", type=float, default=0,
                            help="repeat every this many seconds until stopped (default: once)")

    def handle(self, *args, every: float = 0, **options):
        if every < 0:
            raise CommandError("--every must be a number of seconds, 0 or more")
        while True:
            sent = relay_pending()
            self.stdout.write(f"sent {sent}; {unsent_count()} still waiting for the broker")
            if not every:
                return
            time.sleep(every)
