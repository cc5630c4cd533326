from django import forms

from inventory.models import Hypervisor
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


class CloseIncidentForm(forms.Form):
    note = forms.CharField(widget=forms.TextInput(attrs={"placeholder": "why close it?"}), max_length=2000)
