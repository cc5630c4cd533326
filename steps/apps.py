import importlib
import pkgutil
from pathlib import Path

from django.apps import AppConfig


class StepsConfig(AppConfig):
    """Loads every step kind: each sub-package of this app registers one kind.

    Adding a kind is adding a folder here; no list of kinds is kept anywhere else.
    A kind's ``report.py``, when it has one, tells the incident report what its runs
    measured and how their duration scales; it is loaded after the kind.
    """

    name = "steps"
    verbose_name = "Step kinds"

    def ready(self) -> None:
        for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
            if info.ispkg:
                importlib.import_module(f"{self.name}.{info.name}")
                if (Path(__file__).parent / info.name / "report.py").exists():
                    importlib.import_module(f"{self.name}.{info.name}.report")
