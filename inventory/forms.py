from django import forms

from .models import ProductionHost


class HostScanForm(forms.Form):
    """A new production host before its key is pinned: where it is and how the workers log in."""
    name = forms.CharField(max_length=100)
    address = forms.CharField(max_length=255, help_text="Name or IP address the workers connect to.")
    port = forms.IntegerField(min_value=1, max_value=65535, initial=22)
    user = forms.CharField(max_length=64, initial="root")
    key_path = forms.CharField(max_length=500, required=False, label="key path",
                               help_text="Private key the workers use (path on the worker hosts).")
    notes = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))

    def clean_name(self):
        name = self.cleaned_data["name"].strip()
        if ProductionHost.objects.filter(name=name).exists():
            raise forms.ValidationError(f"a production host named {name!r} already exists")
        return name

    def clean(self):
        data = super().clean()
        for key, value in data.items():
            if isinstance(value, str) and "\x00" in value:
                self.add_error(key, "must not contain NUL characters")
        return data
