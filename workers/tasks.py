"""Celery tasks: thin wrappers. The work is in rehearsals.execution and the engines."""
from celery import shared_task


@shared_task(name="understudy.run_step", acks_late=True)
def run_step(step_run_id: int) -> str:
    from rehearsals.execution import execute_step_run

    return execute_step_run(step_run_id)
