"""The layers import one way: engines <- accounts <- inventory <- runbooks <- incidents
<- rehearsals <- steps (and the Celery tasks) <- the project's URL and ASGI wiring.

A module may import its own package and packages of a lower layer, never a
higher one or one beside it; so there is no cycle between apps. Engines import
no Django, Celery or Channels. Function-level imports of the project's own
modules are allowed only where listed below, each with its reason.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.architecture.imports import ROOT, Import, imports_of, product_files

# Lower number = lower layer. Matched by the longest prefix.
LAYERS = {
    "workers.engines": 0,
    "understudy.settings": 0,   # configuration only: imports no app
    "understudy.celery": 0,     # the Celery app object: imports no app
    "accounts": 1,
    "inventory": 2,
    "runbooks": 3,
    "incidents": 4,
    "rehearsals": 5,
    "steps": 6,
    "reports": 6,               # the incident report: reads the run, reaches kinds through the registry
    "workers": 6,               # the Celery tasks and the in-process worker
    "understudy": 7,            # urls, asgi, the serve and demo commands: the wiring of everything
}
ENGINE_FORBIDDEN = ("django", "celery", "channels", "daphne", "accounts", "inventory", "runbooks", "incidents",
                    "rehearsals", "steps", "understudy", "testbed", "tests")

# (importing module, imported module) -> why it is inside a function.
FUNCTION_LEVEL_ALLOWED = {
    ("understudy.management.commands.demo", "testbed.host"):
        "the test bed lives beside the product in the source tree and is not installed with it; the demo "
        "says so clearly when it is missing",
    ("runbooks.migrations.0002_seed_runbook", "runbooks.seed"):
        "a data migration's RunPython functions import what they load when they run (Django convention)",
}


def layer_of(module: str) -> tuple[str, int] | None:
    best = None
    for prefix, rank in LAYERS.items():
        if module == prefix or module.startswith(prefix + "."):
            if best is None or len(prefix) > len(best[0]):
                best = (prefix, rank)
    return best


def violations(imports: list[Import]) -> list[str]:
    """Every import that goes up or sideways between layers."""
    out = []
    for imp in imports:
        own, target = layer_of(imp.module), layer_of(imp.target)
        if own is None or target is None or own[0] == target[0]:
            continue
        if target[1] >= own[1]:
            where = f"{imp.path.relative_to(ROOT)}:{imp.line}"
            out.append(f"{where}: {imp.module} ({own[0]}, layer {own[1]}) imports {imp.target} "
                       f"({target[0]}, layer {target[1]})")
    return out


def all_imports(**kw) -> list[Import]:
    return [imp for path in product_files(**kw) for imp in imports_of(path)]


def test_every_product_package_has_a_layer():
    unplaced = {imp.module for imp in all_imports() if layer_of(imp.module) is None}
    assert not unplaced, f"modules outside every layer: {sorted(unplaced)}"


def test_imports_go_only_down_the_layers():
    found = violations(all_imports())
    assert not found, "imports against the layering:\n" + "\n".join(found)


def test_engines_import_no_django_and_no_app():
    bad = [f"{imp.path.relative_to(ROOT)}:{imp.line} imports {imp.target}"
           for imp in all_imports() if imp.module.startswith("workers.engines")
           and imp.target.split(".")[0] in ENGINE_FORBIDDEN]
    assert not bad, "\n".join(bad)


def test_nothing_imports_the_step_kinds():
    bad = [f"{imp.path.relative_to(ROOT)}:{imp.line}: {imp.module} imports {imp.target}"
           for imp in all_imports()
           if imp.target.split(".")[0] == "steps" and not imp.module.startswith("steps")]
    assert not bad, "kinds are found through runbooks.kinds.registry:\n" + "\n".join(bad)


def test_function_level_imports_of_the_project_are_listed_with_a_reason():
    ours = ("accounts", "inventory", "runbooks", "incidents", "rehearsals", "steps", "workers", "understudy",
            "testbed")
    local = {(imp.module, imp.target) for imp in all_imports()
             if imp.in_function and imp.target.split(".")[0] in ours}
    unexplained = sorted(local - set(FUNCTION_LEVEL_ALLOWED))
    assert not unexplained, ("function-level imports hide the layering (move them to the top of the module, "
                             f"or list them with the reason): {unexplained}")
    stale = sorted(set(FUNCTION_LEVEL_ALLOWED) - local)
    assert not stale, f"listed but no longer there (remove from the list): {stale}"


def test_the_layering_check_catches_an_upward_import(tmp_path):
    """The checker itself: an import from a lower layer into a higher one is reported."""
    imp = Import("runbooks.models", "rehearsals.models", 1, False, ROOT / "runbooks" / "models.py")
    sideways = Import("workers.tasks", "steps.diff", 3, False, ROOT / "workers" / "tasks.py")
    down = Import("rehearsals.jobs", "runbooks.kinds", 5, False, ROOT / "rehearsals" / "jobs.py")
    found = violations([imp, sideways, down])
    assert len(found) == 2 and "runbooks.models" in found[0] and "steps.diff" in found[1]


@pytest.mark.parametrize("package", ["accounts", "inventory", "runbooks", "incidents", "rehearsals", "steps"])
def test_each_app_is_installed_in_layer_order(package):
    from django.conf import settings

    apps = [a for a in settings.INSTALLED_APPS if a in LAYERS]
    assert package in apps
    ranks = [LAYERS[a] for a in apps]
    assert ranks == sorted(ranks), f"INSTALLED_APPS lists the domain apps out of layer order: {apps}"


def test_the_test_bed_is_not_part_of_the_installed_package():
    text = (ROOT / "pyproject.toml").read_text()
    include = text.split("[tool.setuptools.packages.find]", 1)[1].split("\n\n", 1)[0]
    assert "testbed" not in include and (ROOT / "testbed").is_dir()
    assert not (ROOT / "workers" / "testhost").exists()
    assert not any(Path(p).name.startswith("test_") and Path(p).stem.endswith("_support")
                   for p in (ROOT / "tests").rglob("*.py")), "helper modules must not be collected as tests"


def test_models_load_without_an_ssh_library():
    """Loading the data model must not import paramiko: models use only the engines'
    paramiko-free modules (endpoints and host keys, the diff's vocabulary)."""
    light = {"workers.engines.endpoint", "workers.engines.vocabulary"}
    heavy = [f"{imp.path.relative_to(ROOT)}:{imp.line} imports {imp.target}" for imp in all_imports()
             if imp.path.name == "models.py" and imp.target.startswith("workers.engines") and imp.target not in light]
    assert not heavy, "\n".join(heavy)
    probe = ("import sys; import workers.engines.endpoint, workers.engines.vocabulary; "
             "print('paramiko' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr
