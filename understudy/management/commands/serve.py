"""Run the dashboard: daphne (HTTP + WebSocket) and, on the embedded default, a
Celery worker thread in the same process."""
from __future__ import annotations

from daphne.endpoints import build_endpoint_description_strings
from daphne.server import Server
from django.conf import settings
from django.core.management.base import BaseCommand

from understudy.asgi import application
from workers.inprocess import start_inprocess_worker


def serve(host: str, port: int, *, inprocess_worker: bool, stdout=None) -> None:
    if inprocess_worker:
        start_inprocess_worker()
    Server(application=application, endpoints=build_endpoint_description_strings(host=host, port=port),
           signal_handlers=True, verbosity=0).run()


class Command(BaseCommand):
    help = "Serve the dashboard (daphne); with the embedded default, also run an in-process worker."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--no-worker", action="store_true", help="Do not start the in-process worker.")

    def handle(self, *args, host, port, no_worker, **options):
        inprocess = settings.UNDERSTUDY_INPROCESS_WORKER and not no_worker
        self.stdout.write(f"understudy at http://{host}:{port}/ "
                          f"({'in-process worker' if inprocess else 'external workers'})")
        serve(host, port, inprocess_worker=inprocess)
