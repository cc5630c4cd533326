"""Changes made outside the rehearsal screens that the audit timeline must show anyway:
accounts (users, groups, who is in which group, permissions, API tokens made and revoked) and inventory (a host's
address, user, key or pinned host key; a hypervisor), whoever makes them — the admin,
a shell, a management command. And logging out ends the user's WebSockets.

The actor is the person of the current request (``audit.acting_request``), or nobody
(the system / a command line) outside one.
"""
from __future__ import annotations

from django.contrib.auth import get_user_model, user_logged_out
from django.contrib.auth.models import Group
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_save

from accounts.models import ApiToken
from inventory.models import Hypervisor, ProductionHost
from workers.engines.endpoint import fingerprint

from .audit import current_actor, record
from .events import send_to_group, user_group_name

User = get_user_model()

USER_FIELDS = ("username", "is_active", "is_staff", "is_superuser", "password")
HOST_FIELDS = ("name", "address", "port", "user", "key_path", "host_key")
HYPERVISOR_FIELDS = ("name", "libvirt_uri", "queue", "storage_dir", "domain_type")


def end_sockets_on_logout(sender, request, user, **kwargs) -> None:
    if user is not None and user.pk is not None:
        send_to_group(user_group_name(user.pk), {"type": "session.ended"})


def _remember_old(sender, instance, fields, **kwargs) -> None:
    old = sender.objects.filter(pk=instance.pk).values(*fields).first() if instance.pk else None
    instance._audit_old = old


def _fingerprint(key) -> str:
    try:
        return fingerprint(key)
    except Exception:
        return "(no valid key)"


def _changes(instance, fields) -> list[str]:
    old = getattr(instance, "_audit_old", None) or {}
    out = []
    for f in fields:
        before, after = old.get(f), getattr(instance, f)
        if before == after:
            continue
        if f == "password":
            out.append("password changed")
        elif f == "host_key":
            out.append(f"host key {_fingerprint(before)} → {_fingerprint(after)}")
        else:
            out.append(f"{f} {before!r} → {after!r}")
    return out


def _saved(what: str, action: str, fields):
    def handler(sender, instance, created, update_fields=None, **kwargs):
        if update_fields is not None and set(update_fields) <= {"last_login", "last_scan", "scanned_at"}:
            return  # a login or a leftover scan, not a change of the account or the inventory
        if created:
            record(None, current_actor(), f"{action}_created", f"{what} {instance} created")
            return
        changes = _changes(instance, fields)
        if changes:
            record(None, current_actor(), getattr(instance, "_audit_action", f"{action}_changed"),
                   f"{what} {instance}: {'; '.join(changes)}")
    return handler


def _deleted(what: str, action: str):
    def handler(sender, instance, **kwargs):
        actor = current_actor()
        if actor is not None and actor.pk == getattr(instance, "pk", None) and sender is User:
            actor = None
        record(None, actor, f"{action}_deleted", f"{what} {instance} deleted")
    return handler


def _membership(sender, instance, action, reverse, model, pk_set, **kwargs) -> None:
    if action not in {"post_add", "post_remove", "pre_clear"}:
        return
    verb = {"post_add": "added to", "post_remove": "removed from", "pre_clear": "removed from"}[action]
    if action == "pre_clear":
        pk_set = set((instance.user_set if reverse else instance.groups).values_list("pk", flat=True))
        if not pk_set:
            return
    others = sorted(str(o) for o in model.objects.filter(pk__in=pk_set or ()))
    if not others:
        return
    if reverse:  # group.user_set.add(user, ...)
        message = f"{', '.join(others)} {verb} group {instance}"
    else:
        message = f"{instance} {verb} group {', '.join(others)}"
    record(None, current_actor(), "account.membership_changed", message)


def _permissions(sender, instance, action, reverse, model, pk_set, **kwargs) -> None:
    if action not in {"post_add", "post_remove", "pre_clear"}:
        return
    if action == "pre_clear":
        related = instance.permissions if isinstance(instance, Group) else instance.user_permissions
        pk_set = set(related.values_list("pk", flat=True)) if not reverse else set()
        if not pk_set:
            return
    names = sorted(str(o) for o in model.objects.filter(pk__in=pk_set or ()))
    if names:
        verb = "granted" if action == "post_add" else "revoked"
        record(None, current_actor(), "account.permissions_changed", f"{instance}: {verb} {', '.join(names)}")


def _token_saved(sender, instance, created, update_fields=None, **kwargs) -> None:
    """Made and revoked API tokens (their use is not audited: every API request would be a row)."""
    actor = current_actor() or instance.user
    if created:
        expiry = f"until {instance.expires_at:%Y-%m-%d}" if instance.expires_at else "until revoked"
        record(None, actor, "account.token_created", f"API token {instance} created, valid {expiry}")
    elif update_fields is not None and "revoked_at" in update_fields and instance.revoked_at is not None:
        record(None, actor, "account.token_revoked", f"API token {instance} revoked")


def connect() -> None:
    user_logged_out.connect(end_sockets_on_logout, dispatch_uid="understudy-end-sockets")
    for model, what, action, fields in ((User, "user", "account.user", USER_FIELDS),
                                        (Group, "group", "account.group", ("name",)),
                                        (ProductionHost, "production host", "inventory.host", HOST_FIELDS),
                                        (Hypervisor, "hypervisor", "inventory.hypervisor", HYPERVISOR_FIELDS)):
        uid = f"understudy-audit-{action}"
        pre_save.connect(lambda sender, instance, _f=fields, **kw: _remember_old(sender, instance, _f),
                         sender=model, weak=False, dispatch_uid=uid)
        post_save.connect(_saved(what, action, fields), sender=model, weak=False, dispatch_uid=uid)
        post_delete.connect(_deleted(what, action), sender=model, weak=False, dispatch_uid=uid)
    post_save.connect(_token_saved, sender=ApiToken, dispatch_uid="understudy-audit-token")
    m2m_changed.connect(_membership, sender=User.groups.through, dispatch_uid="understudy-audit-membership")
    m2m_changed.connect(_permissions, sender=User.user_permissions.through,
                        dispatch_uid="understudy-audit-user-perms")
    m2m_changed.connect(_permissions, sender=Group.permissions.through, dispatch_uid="understudy-audit-group-perms")
