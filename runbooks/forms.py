"""The runbook editor's step form, generated from the step kind's params schema (``runbooks.params``):
a string is a text box (a menu when it has choices), an integer a number box, a flag a checkbox, a list of
strings one line per item, anything else (a list of objects) a JSON text area. ``params()`` turns the
fields back into the document the kind validates; its errors come back onto the fields they name."""
from __future__ import annotations

import json
from typing import Any

from django import forms

from .kinds import StepKind
from .params import AbsPath, Bool, Field, Int, List, Regex, Str
from .models import StepSpec

PREFIX = "p_"


def _is_text(field: Field) -> bool:
    return isinstance(field, (Str, Regex, AbsPath))


def _form_field(name: str, spec: Field) -> forms.Field:
    common = {"required": False, "help_text": spec.help, "label": name.replace("_", " ")}
    if isinstance(spec, Str) and spec.choices:
        return forms.ChoiceField(choices=[("", "—")] + [(c, c) for c in spec.choices], **common)
    if isinstance(spec, (Regex, AbsPath)):
        return forms.CharField(strip=False, **common)
    if _is_text(spec):   # free text (a command, instructions) may span lines
        return forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), strip=False, **common)
    if isinstance(spec, Int):
        return forms.IntegerField(min_value=spec.min, max_value=spec.max, **common)
    if isinstance(spec, Bool):
        return forms.BooleanField(**common)
    if isinstance(spec, List) and _is_text(spec.of):
        return forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), **{
            **common, "help_text": (spec.help + " One per line.").strip()})
    return forms.CharField(widget=forms.Textarea(attrs={"rows": 5, "class": "json"}), **{
        **common, "help_text": (spec.help + " JSON.").strip()})


def _shown(spec: Field, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(spec, List) and _is_text(spec.of) and isinstance(value, list):
        return "\n".join(str(v) for v in value)
    if not (_is_text(spec) or isinstance(spec, (Int, Bool))):
        return json.dumps(value, indent=2)
    return value


class StepForm(forms.Form):
    title = forms.CharField(max_length=StepSpec._meta.get_field("title").max_length)
    target = forms.ChoiceField(choices=StepSpec.Target.choices)
    needs_approval = forms.BooleanField(required=False, label="needs approval (four eyes)")
    estimated_seconds = forms.IntegerField(min_value=0, max_value=7 * 24 * 3600, initial=60,
                                           label="estimated seconds")
    milestone = forms.ChoiceField(choices=StepSpec.Milestone.choices, required=False)

    def __init__(self, kind: StepKind, *args, spec: StepSpec | None = None, **kwargs):
        if spec is not None and "initial" not in kwargs:
            kwargs["initial"] = {"title": spec.title, "target": spec.target, "needs_approval": spec.needs_approval,
                                 "estimated_seconds": spec.estimated_seconds, "milestone": spec.milestone,
                                 **{PREFIX + n: _shown(f, spec.params.get(n)) for n, f in kind.params.items()}}
        super().__init__(*args, **kwargs)
        self.kind = kind
        self.fields["target"].choices = [(t, t) for t in sorted(kind.targets)]
        for name, spec_field in kind.params.items():
            self.fields[PREFIX + name] = _form_field(name, spec_field)
            if spec_field.required:
                self.fields[PREFIX + name].label += " *"

    def param_fields(self):
        return [self[PREFIX + name] for name in self.kind.params]

    def common_fields(self):
        return [self[n] for n in ("title", "target", "needs_approval", "estimated_seconds", "milestone")]

    def clean(self):
        data = super().clean()
        for key, value in list(data.items()):
            if isinstance(value, str) and "\x00" in value:
                self.add_error(key, "must not contain NUL characters")
        return data

    def params(self) -> dict[str, Any]:
        """The params document from the fields; an empty optional field is left out (its default applies).
        A JSON field that does not parse is a field error."""
        out: dict[str, Any] = {}
        for name, spec in self.kind.params.items():
            value = self.cleaned_data.get(PREFIX + name)
            if isinstance(spec, Bool):
                out[name] = bool(value)
                continue
            if value is None or value == "":
                continue
            if isinstance(spec, List) and _is_text(spec.of):
                out[name] = [line.strip() for line in value.splitlines() if line.strip()]
            elif not (_is_text(spec) or isinstance(spec, Int)):
                try:
                    out[name] = json.loads(value)
                except ValueError as exc:
                    self.add_error(PREFIX + name, f"not valid JSON: {exc}")
            else:
                out[name] = value
        return out

    def add_schema_errors(self, errors: list[str]) -> None:
        """Put each of the kind's errors ("name: …", "name[2]: …") on the field it names."""
        for error in errors:
            head = error.split(":", 1)[0].split("[", 1)[0].split(".", 1)[0].strip()
            if PREFIX + head in self.fields:
                self.add_error(PREFIX + head, error)
            elif head in self.fields:
                self.add_error(head, error)
            else:
                self.add_error(None, error)
