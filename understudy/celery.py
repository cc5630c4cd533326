"""The Celery app. Each hypervisor host runs one worker on its own queue
(``Hypervisor.queue``); step tasks are routed there when they are sent."""
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "understudy.settings")

app = Celery("understudy")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["workers"])
