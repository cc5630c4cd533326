import importlib

from django.apps import AppConfig


class RehearsalsConfig(AppConfig):
    name = "rehearsals"
    verbose_name = "Rehearsals"

    def ready(self) -> None:
        # The audit of account and inventory changes, and the end of sockets on logout
        # (rehearsals.signals; loaded once the models are, as steps/apps.py loads the kinds).
        importlib.import_module(f"{self.name}.signals").connect()
