"""Celery tasks: thin wrappers. The work is in rehearsals.execution and the engines."""
from celery import shared_task


@shared_task(name="understudy.run_step", acks_late=True)
def run_step(step_run_id: int, phase: str = "run") -> str:
    from rehearsals.execution import execute_step_run

    return execute_step_run(step_run_id, phase)


@shared_task(name="understudy.destroy_clone")
def destroy_clone(clone_id: int, actor_id: int | None = None) -> dict:
    from rehearsals.services import clone_destroyed

    return clone_destroyed(clone_id, actor_id)


@shared_task(name="understudy.scan_hypervisor")
def scan_hypervisor(hypervisor_id: int) -> list[dict]:
    from rehearsals.clones import scan_hypervisor as scan
    from rehearsals.models import Hypervisor

    return scan(Hypervisor.objects.get(pk=hypervisor_id))


@shared_task(name="understudy.destroy_leftover")
def destroy_leftover(hypervisor_id: int, domain_name: str) -> bool:
    from rehearsals.clones import destroy_leftover as destroy
    from rehearsals.models import Hypervisor

    return destroy(Hypervisor.objects.get(pk=hypervisor_id), domain_name)


@shared_task(name="understudy.rollback_sync")
def rollback_sync(step_run_id: int, actor_id: int | None = None) -> dict:
    from rehearsals.services import rollback_done

    return rollback_done(step_run_id, actor_id)
