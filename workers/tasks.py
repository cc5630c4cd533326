"""Celery tasks: thin wrappers. The work is in rehearsals.jobs and the engines.

Each is sent by name from ``rehearsals.dispatch`` to the queue of the hypervisor
it concerns.
"""
from celery import shared_task

from rehearsals import dispatch, jobs, leases


@shared_task(name=dispatch.RUN_STEP, acks_late=True, bind=True)
def run_step(self, step_run_id: int, phase: str = "run", attempt: int | None = None) -> str:
    return jobs.execute_step_run(step_run_id, phase, worker=self.request.hostname or "", attempt=attempt)


@shared_task(name=dispatch.REAP_EXPIRED_LEASES)
def reap_expired_leases() -> list[int]:
    return [run.pk for run in leases.reap_expired_leases()]


@shared_task(name=dispatch.STEP_JOB)
def step_job(step_run_id: int, job: str, actor_id: int | None = None, data: dict | None = None) -> dict:
    return jobs.execute_step_job(step_run_id, job, actor_id, data or {})


@shared_task(name=dispatch.DESTROY_CLONE)
def destroy_clone(clone_id: int, actor_id: int | None = None) -> dict:
    return jobs.destroy_clone(clone_id, actor_id)


@shared_task(name=dispatch.SCAN_HYPERVISOR)
def scan_hypervisor(hypervisor_id: int, actor_id: int | None = None) -> list[dict]:
    return jobs.scan_hypervisor(hypervisor_id, actor_id)


@shared_task(name=dispatch.DESTROY_LEFTOVER)
def destroy_leftover(hypervisor_id: int, domain_name: str, actor_id: int | None = None) -> bool:
    return jobs.destroy_leftover(hypervisor_id, domain_name, actor_id)


@shared_task(name=dispatch.RELAY_OUTBOX)
def relay_outbox() -> int:
    return dispatch.relay_pending()
