"""Each trace's time range, so span reads skip the daily partitions that cannot hold it.

Traces already stored get theirs from their spans once, here.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("flows", "0004_flow_trace_via"),
        ("ingest", "0008_flowtouch_span_times"),
    ]

    operations = [
        migrations.CreateModel(
            name="TraceRange",
            fields=[
                ("trace_id", models.BinaryField(max_length=16, primary_key=True, serialize=False)),
                ("first_start", models.DateTimeField()),
                ("last_start", models.DateTimeField()),
            ],
        ),
        migrations.RunSQL(
            """
            INSERT INTO flows_tracerange (trace_id, first_start, last_start)
            SELECT trace_id, min(start_time), max(start_time) FROM ingest_span GROUP BY trace_id
            """,
            migrations.RunSQL.noop,
        ),
    ]
