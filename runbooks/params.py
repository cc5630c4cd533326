"""Typed step parameters: a tiny schema language, validated when a runbook is saved.

Each step kind declares ``params = {"name": Field(...)}``. ``clean_mapping`` returns the
normalised params (defaults filled in) or raises ``ParamErrors`` listing every
problem with its path, so a bad runbook is rejected with all its errors at once.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping


class ParamErrors(ValueError):
    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


_MISSING = object()


@dataclass
class Field:
    required: bool = False
    default: Any = None
    help: str = ""

    def clean(self, value: Any, path: str, errors: list[str]) -> Any:
        return value


@dataclass
class Str(Field):
    choices: tuple[str, ...] | None = None
    allow_blank: bool = False
    pattern: str | None = None

    def clean(self, value, path, errors):
        if not isinstance(value, str):
            errors.append(f"{path}: expected a string, got {type(value).__name__}")
            return value
        if not value.strip() and not self.allow_blank:
            errors.append(f"{path}: must not be blank")
        if self.choices and value not in self.choices:
            errors.append(f"{path}: {value!r} is not one of {', '.join(self.choices)}")
        if self.pattern and value and not re.fullmatch(self.pattern, value):
            errors.append(f"{path}: {value!r} does not match {self.pattern}")
        return value


@dataclass
class Regex(Str):
    def clean(self, value, path, errors):
        value = super().clean(value, path, errors)
        if isinstance(value, str) and value:
            try:
                re.compile(value)
            except re.error as exc:
                errors.append(f"{path}: invalid regular expression: {exc}")
        return value


@dataclass
class AbsPath(Str):
    def clean(self, value, path, errors):
        value = super().clean(value, path, errors)
        if isinstance(value, str) and value:
            if not value.startswith("/"):
                errors.append(f"{path}: {value!r} must be an absolute path")
            if "\0" in value:
                errors.append(f"{path}: must not contain NUL")
            if any(part == ".." for part in value.split("/")):
                errors.append(f"{path}: {value!r} must not contain '..'")
        return value


@dataclass
class Int(Field):
    min: int | None = None
    max: int | None = None

    def clean(self, value, path, errors):
        if isinstance(value, bool) or not isinstance(value, int):
            errors.append(f"{path}: expected an integer, got {value!r}")
            return value
        if self.min is not None and value < self.min:
            errors.append(f"{path}: {value} is below the minimum {self.min}")
        if self.max is not None and value > self.max:
            errors.append(f"{path}: {value} is above the maximum {self.max}")
        return value


@dataclass
class Bool(Field):
    def clean(self, value, path, errors):
        if not isinstance(value, bool):
            errors.append(f"{path}: expected true or false, got {value!r}")
        return value


@dataclass
class List(Field):
    of: Field = field(default_factory=Field)
    min_items: int = 0

    def clean(self, value, path, errors):
        if not isinstance(value, list):
            errors.append(f"{path}: expected a list, got {type(value).__name__}")
            return value
        if len(value) < self.min_items:
            errors.append(f"{path}: needs at least {self.min_items} item(s)")
        return [self.of.clean(item, f"{path}[{i}]", errors) for i, item in enumerate(value)]


def clean_mapping(schema: Mapping[str, Field], params: Any, errors: list[str], prefix: str = "") -> dict:
    if not isinstance(params, dict):
        errors.append(f"{prefix or 'params'}: expected an object")
        return {}
    cleaned: dict[str, Any] = {}
    for key in params:
        if key not in schema:
            errors.append(f"{prefix}{key}: unknown parameter (known: {', '.join(schema) or 'none'})")
    for name, spec in schema.items():
        value = params.get(name, _MISSING)
        if value is _MISSING or value is None:
            if spec.required:
                errors.append(f"{prefix}{name}: required")
                continue
            if spec.default is not None:
                cleaned[name] = spec.default() if callable(spec.default) else spec.default
            continue
        cleaned[name] = spec.clean(value, f"{prefix}{name}", errors)
    return cleaned

