"""What is stored is queued for the ledger in the same transaction, by the database itself.

One statement-level trigger per source with a transition table: a COPY of 5,000 records
adds one INSERT ... SELECT of 5,000 small rows, and nothing waits on a hash chain. A dead
letter is queued when it is created and each time it dies again (its history grows).
"""

from django.db import migrations

QUEUE = """
CREATE FUNCTION ledger_queue_records() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ledger_pendingentry (kind, source_id, source_at)
    SELECT 'record', id, occurred_at FROM new_rows ORDER BY id;
    RETURN NULL;
END;
$$;
CREATE TRIGGER ingest_record_to_ledger AFTER INSERT ON ingest_record
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_queue_records();

CREATE FUNCTION ledger_queue_dead_letters() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ledger_pendingentry (kind, source_id, source_version)
    SELECT 'dead_letter', id, jsonb_array_length(history) FROM new_rows ORDER BY id;
    RETURN NULL;
END;
$$;
CREATE TRIGGER ingest_deadletter_to_ledger AFTER INSERT ON ingest_deadletter
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_queue_dead_letters();

CREATE FUNCTION ledger_queue_deaths() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ledger_pendingentry (kind, source_id, source_version)
    SELECT 'dead_letter', n.id, jsonb_array_length(n.history)
    FROM new_rows n JOIN old_rows o ON o.id = n.id
    WHERE jsonb_array_length(n.history) > jsonb_array_length(o.history)
    ORDER BY n.id;
    RETURN NULL;
END;
$$;
CREATE TRIGGER ingest_deadletter_death_to_ledger AFTER UPDATE ON ingest_deadletter
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_queue_deaths();

CREATE FUNCTION ledger_queue_journal() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ledger_pendingentry (kind, source_id)
    SELECT 'journal', id FROM new_rows ORDER BY id;
    RETURN NULL;
END;
$$;
CREATE TRIGGER console_journalentry_to_ledger AFTER INSERT ON console_journalentry
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_queue_journal();
"""

UNQUEUE = """
DROP TRIGGER IF EXISTS console_journalentry_to_ledger ON console_journalentry;
DROP TRIGGER IF EXISTS ingest_deadletter_death_to_ledger ON ingest_deadletter;
DROP TRIGGER IF EXISTS ingest_deadletter_to_ledger ON ingest_deadletter;
DROP TRIGGER IF EXISTS ingest_record_to_ledger ON ingest_record;
DROP FUNCTION IF EXISTS ledger_queue_journal();
DROP FUNCTION IF EXISTS ledger_queue_deaths();
DROP FUNCTION IF EXISTS ledger_queue_dead_letters();
DROP FUNCTION IF EXISTS ledger_queue_records();
"""


class Migration(migrations.Migration):
    dependencies = [
        ("ledger", "0002_append_only"),
        ("ingest", "0008_flowtouch_span_times"),
    ]

    operations = [migrations.RunSQL(QUEUE, UNQUEUE)]
