from django import forms

from .models import Report


class NarrativeForm(forms.ModelForm):
    class Meta:
        model = Report
        fields = ["summary", "went_well", "went_wrong", "got_lucky"]
        widgets = {name: forms.Textarea(attrs={"rows": 3}) for name in ["summary", "went_well", "went_wrong",
                                                                       "got_lucky"]}


class ActionItemForm(forms.Form):
    text = forms.CharField(max_length=300)
    owner = forms.CharField(max_length=100, required=False)
    due = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
