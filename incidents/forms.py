from django import forms

from rehearsals.models import Hypervisor, Rehearsal, Runbook

from .models import Incident


class IncidentForm(forms.ModelForm):
    class Meta:
        model = Incident
        fields = ["title", "description", "severity", "production_host", "broken_service"]


class NewRehearsalForm(forms.Form):
    runbook = forms.ModelChoiceField(queryset=Runbook.objects.all())
    hypervisor = forms.ModelChoiceField(queryset=Hypervisor.objects.all())
    mode = forms.ChoiceField(choices=Rehearsal.Mode.choices, initial=Rehearsal.Mode.REHEARSAL)
    keep_clone = forms.BooleanField(required=False)
