from django.db import migrations


def forwards(apps, schema_editor):
    from rehearsals.seed import load_seed_runbook

    load_seed_runbook(apps.get_model("rehearsals", "Runbook"), apps.get_model("rehearsals", "StepSpec"))


def backwards(apps, schema_editor):
    from rehearsals.seed import SEED_NAME

    Runbook = apps.get_model("rehearsals", "Runbook")
    Runbook.objects.filter(name=SEED_NAME, version=1, rehearsals__isnull=True).delete()


class Migration(migrations.Migration):
    dependencies = [("rehearsals", "0001_initial")]
    operations = [migrations.RunPython(forwards, backwards)]
