import importlib

from django.apps import AppConfig


class WorkersConfig(AppConfig):
    name = "workers"
    verbose_name = "Workers"

    def ready(self) -> None:
        # The in-process worker serves hypervisors added after it started (workers.inprocess,
        # loaded once the models are, as rehearsals/apps.py loads its signals).
        importlib.import_module(f"{self.name}.inprocess").connect()
