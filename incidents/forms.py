from django import forms

from .models import Incident


class IncidentForm(forms.ModelForm):
    class Meta:
        model = Incident
        fields = ["title", "description", "severity", "production_host", "broken_service", "restoration_target_minutes"]
