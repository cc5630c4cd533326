"""The names the diff reports, with the labels a person reads.

The single source for both the engines and the UI: the diff puts every
differing path into one of ``CATEGORIES``, the verify step puts every changed
file into one of ``CLASSES``; the Django side builds its choices from
``CHANGE_LABELS`` and ``VERDICT_LABELS``. Nothing is imported here, so models
can load this without an SSH library.
"""
from __future__ import annotations

# diff_manifests: how a path differs between the clone and production
CHANGE_LABELS: dict[str, str] = {
    "changed": "content differs",
    "missing_on_production": "missing on production",
    "extra_on_production": "only on production",
    "type_changed": "type differs",
    "unreadable": "unreadable",
    "metadata_changed": "metadata differs (mode/owner)",
}
CATEGORIES: tuple[str, ...] = tuple(CHANGE_LABELS)

# classify: what the database's verify tool says about a changed file on each side
VERDICT_LABELS: dict[str, str] = {
    "corrupted_on_production": "corrupted on production, healthy on the clone",
    "newer_on_production": "healthy on both, newer on production — leave alone",
    "corrupted_on_both": "corrupted on both — the restore did not fix it",
    "corrupted_on_clone_only": "corrupted on the clone only",
    "changed_unverified": "changed (no verify command)",
    "verify_error": "verify tool could not run",
}
CLASSES: tuple[str, ...] = tuple(VERDICT_LABELS)
