"""Reading the product's imports with ``ast``, for the layering tests."""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCT_PACKAGES = ["accounts", "inventory", "runbooks", "incidents", "rehearsals", "steps", "workers", "understudy"]


@dataclass(frozen=True)
class Import:
    module: str        # the importing module, e.g. "rehearsals.transitions"
    target: str        # the imported module, resolved, e.g. "runbooks.kinds"
    line: int
    in_function: bool  # inside a def (a function-level import)
    path: Path


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    if level == 0:
        return name or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[:len(base) - (level - 1)] if level > 1 else base
    return ".".join(base + ([name] if name else []))


def imports_of(path: Path) -> list[Import]:
    module = module_name(path)
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[Import] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    found.append(Import(module, alias.name, child.lineno, in_function, path))
            elif isinstance(child, ast.ImportFrom):
                target = _resolve(module, is_package, child.level, child.module)
                for alias in child.names:
                    # "from . import x" names a module; "from .m import x" names a module m
                    full = f"{target}.{alias.name}" if child.module is None else target
                    found.append(Import(module, full, child.lineno, in_function, path))
            visit(child, inner)

    visit(tree, False)
    return found


def product_files(*, include_migrations: bool = True) -> list[Path]:
    files = []
    for package in PRODUCT_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if not include_migrations and "migrations" in path.parts:
                continue
            files.append(path)
    return files
