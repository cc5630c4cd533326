"""Manifests of file trees on hosts, and the clone-vs-production diff.

The diff step hashes the clone and production *at the same time* (two SSH
sessions, two threads), compares them, and optionally asks the database's own
verify tool which changed files are corrupted on production (the repair) and
which are merely newer there. One module per stage:

``model``    the manifest itself (entries, save/load), path helpers
``hashing``  running the hashing agent here or over SSH, algorithm negotiation, both sides at once
``shell``    the shell fallback for hosts without python3 (whole-file digests)
``diff``     comparing two manifests (categories: ``vocabulary.CATEGORIES``)
``verify``   the verify tool on both sides (classes: ``vocabulary.CLASSES``); ``diff_hosts``
``drift``    did production change since the clone's point in time

No Django or Celery here: engines report through an ``Emitter``.
"""
from __future__ import annotations

from .diff import CATEGORIES, CHANGE_LABELS, DiffEntry, DiffResult, check_comparable, diff_manifests
from .drift import Drift, drift_check
from .hashing import (PREFERENCE, Algorithm, Probe, build_local_manifest, build_manifest, build_pair,
                      build_remote_manifest, negotiate_algorithm, probe_host)
from .model import DEFAULT_CHUNK, Entry, Local, Manifest, ManifestError, join_path, show_path
from .shell import SHELL_AGENT, SHELL_TOOLS, parse_shell_output
from .verify import (CLASSES, VERDICT_LABELS, Classification, Classified, CorruptedOnBoth, check_verify_template,
                     classify, diff_hosts, verify_argv)

__all__ = [
    "CATEGORIES", "CHANGE_LABELS", "DiffEntry", "DiffResult", "check_comparable", "diff_manifests",
    "Drift", "drift_check",
    "PREFERENCE", "Algorithm", "Probe", "build_local_manifest", "build_manifest", "build_pair",
    "build_remote_manifest", "negotiate_algorithm", "probe_host",
    "DEFAULT_CHUNK", "Entry", "Local", "Manifest", "ManifestError", "join_path", "show_path",
    "SHELL_AGENT", "SHELL_TOOLS", "parse_shell_output",
    "CLASSES", "VERDICT_LABELS", "Classification", "Classified", "CorruptedOnBoth", "classify", "diff_hosts",
    "verify_argv", "check_verify_template",
]
