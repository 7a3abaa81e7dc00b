"""Index the audit records that name no flow, as the summarizer looks them up.

A flow's records are those with its correlation ID, and those without one that name one of
its traces or (with no trace either) carry one of its message IDs. Through the full trace
and message indexes, each trace probe fetched the flow's own records from the heap only to
drop them (they carry a correlation ID): most of the summarizer's PostgreSQL time. These
indexes hold only the records without a correlation ID, which are few.
"""

from __future__ import annotations

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("ingest", "0009_span_unread_indexes")]

    operations = [
        migrations.RunSQL(
            "CREATE INDEX ingest_record_orphan_trace ON ingest_record (trace_id) "
            "WHERE correlation_id IS NULL",
            "DROP INDEX ingest_record_orphan_trace",
        ),
        migrations.RunSQL(
            "CREATE INDEX ingest_record_orphan_message ON ingest_record (message_id) "
            "WHERE correlation_id IS NULL AND trace_id IS NULL",
            "DROP INDEX ingest_record_orphan_message",
        ),
    ]
