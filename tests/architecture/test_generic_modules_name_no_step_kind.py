"""The generic layers never name a step kind: what is special about a kind lives in
its folder under steps/ (params, run/preview, panel template, extra actions).

A kind named in a generic module (a string equal to a kind's name, or a
comparison of some ``kind`` with a literal) is the start of a switch statement
in five files; the test lists where.
"""
from __future__ import annotations

import ast
import re

from tests.architecture.imports import ROOT

GENERIC_PYTHON = sorted(
    [p for p in (ROOT / "rehearsals").rglob("*.py") if "migrations" not in p.parts]
    + [p for p in (ROOT / "runbooks").rglob("*.py") if "migrations" not in p.parts and p.name != "seed.py"]
    + [p for p in (ROOT / "reports").rglob("*.py") if "migrations" not in p.parts]
    + [ROOT / "workers" / "tasks.py", ROOT / "workers" / "inprocess.py"])
GENERIC_BROWSER = [ROOT / "static" / "understudy" / "rehearsal.js", *sorted((ROOT / "templates").rglob("*.html"))]
TARGETS = {"clone", "production"}  # a target may share a kind's name ("clone"): only comparisons count then


def kind_names() -> set[str]:
    return {p.name for p in (ROOT / "steps").iterdir() if p.is_dir() and (p / "__init__.py").exists()}


def _is_kind_expr(node: ast.AST) -> bool:
    return (isinstance(node, ast.Name) and node.id.endswith("kind")) or \
        (isinstance(node, ast.Attribute) and node.attr.endswith("kind"))


def python_mentions(source: str, kinds: set[str]) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in kinds - TARGETS:
            found.append((node.lineno, repr(node.value)))
        elif isinstance(node, ast.Compare) and any(_is_kind_expr(x) for x in [node.left, *node.comparators]):
            for x in [node.left, *node.comparators]:
                if isinstance(x, ast.Constant) and x.value in kinds:
                    found.append((node.lineno, f"kind compared with {x.value!r}"))
        elif isinstance(node, ast.keyword) and node.arg and "kind" in node.arg \
                and isinstance(node.value, ast.Constant) and node.value.value in kinds:
            found.append((node.value.lineno, f"{node.arg}={node.value.value!r}"))
    return found


def browser_mentions(source: str, kinds: set[str]) -> list[tuple[int, str]]:
    only_kinds = "|".join(sorted(re.escape(k) for k in kinds - TARGETS))
    every_kind = "|".join(sorted(re.escape(k) for k in kinds))
    quoted = re.compile(rf"""["'`]({only_kinds})["'`]""")
    compared = re.compile(rf"""kind\s*[!=]==?\s*["'`]({every_kind})["'`]|["'`]({every_kind})["'`]\s*[!=]==?\s*[\w.]*kind\b""")
    found = []
    for n, line in enumerate(source.splitlines(), start=1):
        found += [(n, m.group(0)) for m in quoted.finditer(line)]
        found += [(n, m.group(0)) for m in compared.finditer(line)]
    return found


def test_generic_python_modules_name_no_step_kind():
    kinds = kind_names()
    bad = [f"{p.relative_to(ROOT)}:{line}: {what}" for p in GENERIC_PYTHON
           for line, what in python_mentions(p.read_text(), kinds)]
    assert not bad, "generic modules naming a step kind:\n" + "\n".join(bad)


def test_the_page_script_and_templates_name_no_step_kind():
    kinds = kind_names()
    bad = [f"{p.relative_to(ROOT)}:{line}: {what}" for p in GENERIC_BROWSER
           for line, what in browser_mentions(p.read_text(), kinds)]
    assert not bad, "generic page code naming a step kind:\n" + "\n".join(bad)


def test_the_checks_catch_a_kind_switch():
    kinds = kind_names()
    assert {"diff", "sync_back", "clone", "command"} <= kinds
    py = ('if run.step.kind != "sync_back":\n    pass\nqs.filter(step__kind="diff")\nx = "clone"\n'
          'if spec.kind == "clone":\n    pass\nif event.kind == "progress":\n    pass\n')
    assert sorted(line for line, _ in python_mentions(py, kinds)) == [1, 1, 3, 3, 5]
    js = ('if (step.kind === "diff") render();\nconst t = state.clone;\nif (f.kind === "log") x();\n'
          'if (s.kind == "clone") y();\n')
    assert sorted(line for line, _ in browser_mentions(js, kinds)) == [1, 1, 4]
