from django.db import migrations


def forwards(apps, schema_editor):
    from runbooks.seed import load_seed_runbook

    load_seed_runbook(apps.get_model("runbooks", "Runbook"), apps.get_model("runbooks", "StepSpec"))


def backwards(apps, schema_editor):
    from runbooks.seed import SEED_NAME

    Runbook = apps.get_model("runbooks", "Runbook")
    Runbook.objects.filter(name=SEED_NAME, version=1, locked_at__isnull=True).delete()


class Migration(migrations.Migration):
    dependencies = [("runbooks", "0001_initial")]
    operations = [migrations.RunPython(forwards, backwards)]
