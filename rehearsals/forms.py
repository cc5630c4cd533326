from django import forms

from inventory.models import Hypervisor
from runbooks.models import Runbook

from .models import Rehearsal


class NewRehearsalForm(forms.Form):
    runbook = forms.ModelChoiceField(queryset=Runbook.objects.all())
    hypervisor = forms.ModelChoiceField(queryset=Hypervisor.objects.all())
    mode = forms.ChoiceField(choices=Rehearsal.Mode.choices, initial=Rehearsal.Mode.REHEARSAL)
    keep_clone = forms.BooleanField(required=False)


class CloseIncidentForm(forms.Form):
    note = forms.CharField(widget=forms.TextInput(attrs={"placeholder": "why close it?"}), max_length=2000)
