"""Roles. ``ops`` run and approve; ``managers`` only read; ``admins`` manage accounts,
groups and the inventory (in the Django admin) and are not ops, so no ops member can
create the second account that would approve their own change. One place decides,
and views, the JSON API, WebSocket consumers and services all ask it."""
from __future__ import annotations

from django.core.exceptions import PermissionDenied

OPS = "ops"
MANAGERS = "managers"
ADMINS = "admins"

# What each group may do in the Django admin ("app_label.codename"); accounts/migrations keeps them.
ADMIN_PERMISSIONS = [f"{app}.{verb}_{model}" for app, model in (("auth", "user"), ("auth", "group"),
                                                                 ("inventory", "productionhost"),
                                                                 ("inventory", "hypervisor"))
                     for verb in ("add", "change", "delete", "view")]
OPS_PERMISSIONS = [f"runbooks.{verb}_{model}" for model in ("runbook", "stepspec")
                   for verb in ("add", "change", "delete", "view")] + \
                  ["inventory.view_productionhost", "inventory.view_hypervisor"]


def _groups(user) -> set[str]:
    if not getattr(user, "is_authenticated", False):
        return set()
    cached = getattr(user, "_understudy_groups", None)
    if cached is None:
        cached = set(user.groups.values_list("name", flat=True))
        user._understudy_groups = cached
    return cached


def can_operate(user) -> bool:
    # Membership only: a superuser is not ops by being one. Whoever manages accounts could
    # otherwise make the second account and approve their own change (four eyes).
    return bool(getattr(user, "is_authenticated", False)) and OPS in _groups(user)


def can_read(user) -> bool:
    return can_operate(user) or MANAGERS in _groups(user) or can_administer(user)


def is_manager(user) -> bool:
    return bool(getattr(user, "is_authenticated", False)) and MANAGERS in _groups(user)


def can_administer(user) -> bool:
    """Users, groups and inventory: admins (and superusers). They read incidents and runs, and
    run or approve nothing unless they are also in ops — an audited membership change."""
    return bool(getattr(user, "is_authenticated", False)) and (user.is_superuser or ADMINS in _groups(user))


def require_operator(user) -> None:
    if not can_operate(user):
        raise PermissionDenied("only members of the 'ops' group can run, approve or change rehearsals")


# Starting a production run writes the real production host: its own permission, as
# recovery tools separate test and run privileges. Granted per user or through a group.
RUN_PRODUCTION = "rehearsals.run_production"


def can_run_production(user) -> bool:
    return can_operate(user) and user.has_perm(RUN_PRODUCTION)


def require_production_runner(user) -> None:
    if not can_run_production(user):
        raise PermissionDenied("starting a production run needs the permission to run on production "
                               f"({RUN_PRODUCTION}); a dress rehearsal does not")


def require_reader(user) -> None:
    if not can_read(user):
        raise PermissionDenied("you need the 'ops' or 'managers' role to see incidents")


def roles_context(request) -> dict:
    return {"can_operate": can_operate(request.user), "can_read": can_read(request.user),
            "can_run_production": can_run_production(request.user)}


def require_manager(user) -> None:
    if not is_manager(user):
        raise PermissionDenied("only members of the 'managers' group mark a report reviewed")
