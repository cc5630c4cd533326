from django import forms

from incidents.models import Incident
from inventory.models import Hypervisor, ProductionHost
from runbooks.models import Runbook

from .models import Rehearsal


class NewRehearsalForm(forms.Form):
    runbook = forms.ModelChoiceField(queryset=Runbook.objects.all())
    hypervisor = forms.ModelChoiceField(queryset=Hypervisor.objects.all())
    mode = forms.ChoiceField(choices=Rehearsal.Mode.choices, initial=Rehearsal.Mode.REHEARSAL)
    keep_clone = forms.BooleanField(required=False)
    continues_from = forms.ModelChoiceField(
        queryset=Rehearsal.objects.none(), required=False, label="continue from",
        help_text="Production run: the succeeded dress rehearsal whose repaired workbench it continues on.")
    override_reason = forms.CharField(
        required=False, max_length=2000, label="override reason",
        widget=forms.TextInput(attrs={"placeholder": "production run without a dress rehearsal: why?"}))

    def __init__(self, *args, incident=None, **kwargs):
        super().__init__(*args, **kwargs)
        if incident is not None:
            self.fields["continues_from"].queryset = Rehearsal.objects.filter(
                incident__production_host=incident.production_host, mode=Rehearsal.Mode.REHEARSAL,
                status=Rehearsal.Status.SUCCEEDED)
        self.fields["hypervisor"].required = False   # a production run continuing from a rehearsal uses its own
        self.fields["mode"].widget = forms.RadioSelect(choices=Rehearsal.Mode.choices)

    def selected_runbook(self) -> Runbook | None:
        """The runbook version the form shows the steps of: the posted one, or the one asked for."""
        value = self.data.get("runbook") if self.is_bound else self.initial.get("runbook")
        if value is None or not str(value).isdigit():
            return None
        return Runbook.objects.filter(pk=int(value)).first()


class IncidentFilterForm(forms.Form):
    """The incidents list's filters; an empty field filters nothing."""
    status = forms.ChoiceField(choices=[("", "any status")] + list(Incident.Status.choices), required=False)
    severity = forms.ChoiceField(choices=[("", "any severity")] + list(Incident.Severity.choices), required=False)
    host = forms.ModelChoiceField(queryset=ProductionHost.objects.all(), required=False, empty_label="any host")

    def apply(self, incidents):
        data = self.cleaned_data
        if data.get("status"):
            incidents = incidents.filter(status=data["status"])
        if data.get("severity"):
            incidents = incidents.filter(severity=data["severity"])
        if data.get("host"):
            incidents = incidents.filter(production_host=data["host"])
        return incidents


class CloseIncidentForm(forms.Form):
    note = forms.CharField(widget=forms.TextInput(attrs={"placeholder": "why close it?"}), max_length=2000)
