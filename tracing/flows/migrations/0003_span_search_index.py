"""Search by span ID (the one search the span table had no index for).

It lives here, not in ingest, because only search needs it; on the partitioned parent it
covers every partition, present and future.
"""

from __future__ import annotations

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("flows", "0002_flow_summary"),
        ("ingest", "0006_flowtouch_message"),
    ]

    operations = [
        migrations.RunSQL(
            "CREATE INDEX ingest_span_span_id ON ingest_span (span_id)",
            "DROP INDEX ingest_span_span_id",
        )
    ]
