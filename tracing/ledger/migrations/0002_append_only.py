"""Entries, nodes and checkpoints refuse UPDATE, DELETE and TRUNCATE, like the journal.

The trigger function is the journal's (console 0002). Only a table's owner or a superuser
can switch a trigger off, and the application's role is neither (tracing/ledger/roles.py).
"""

from django.db import migrations

TABLES = ["ledger_entry", "ledger_node", "ledger_checkpoint"]

REFUSE = "".join(
    f"""
CREATE TRIGGER {table}_no_update_delete BEFORE UPDATE OR DELETE ON {table}
    FOR EACH ROW EXECUTE FUNCTION tideline_refuse_change();
CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
    FOR EACH STATEMENT EXECUTE FUNCTION tideline_refuse_change();
"""
    for table in TABLES
)
ALLOW = "".join(
    f"""
DROP TRIGGER IF EXISTS {table}_no_truncate ON {table};
DROP TRIGGER IF EXISTS {table}_no_update_delete ON {table};
"""
    for table in TABLES
)


class Migration(migrations.Migration):
    dependencies = [
        ("ledger", "0001_initial"),
        ("console", "0002_roles_and_append_only_journal"),
    ]

    operations = [migrations.RunSQL(REFUSE, ALLOW)]
