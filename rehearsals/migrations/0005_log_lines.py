"""A log event's text and stream in their own columns (the log viewer's search and paging read them)."""
from django.db import migrations, models

BATCH = 2000


def fill_log_columns(apps, schema_editor):
    StepEvent = apps.get_model("rehearsals", "StepEvent")
    last = 0
    while True:
        rows = list(StepEvent.objects.filter(kind="log", pk__gt=last).order_by("pk")[:BATCH])
        if not rows:
            return
        for row in rows:
            row.line = str(row.payload.get("line", ""))
            row.stream = str(row.payload.get("stream", ""))[:8]
        StepEvent.objects.bulk_update(rows, ["line", "stream"])
        last = rows[-1].pk


class Migration(migrations.Migration):

    dependencies = [
        ("rehearsals", "0004_dispatch_outbox"),
    ]

    operations = [
        migrations.AddField(
            model_name="stepevent",
            name="line",
            field=models.TextField(blank=True, default="", help_text="A log event's text (empty for other kinds)."),
        ),
        migrations.AddField(
            model_name="stepevent",
            name="stream",
            field=models.CharField(blank=True, default="", help_text="A log event's stream.", max_length=8),
        ),
        migrations.RunPython(fill_log_columns, migrations.RunPython.noop),
    ]
