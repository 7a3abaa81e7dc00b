from django.db import migrations
from django.utils import timezone


def first_partitions(apps, schema_editor):
    from tracing.ingest.partitions import partitions_ensure

    partitions_ensure(now=timezone.now())


class Migration(migrations.Migration):
    dependencies = [("ingest", "0001_initial")]

    operations = [migrations.RunPython(first_partitions, migrations.RunPython.noop)]
