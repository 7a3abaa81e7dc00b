"""The four roles as groups, and a trigger that makes the journal append-only.

`tideline_refuse_change()` is shared: the ledger's tables use the same trigger function.
"""

from django.db import migrations

ROLES = ["support", "operator", "auditor", "admin"]

REFUSE_CHANGE = """
CREATE OR REPLACE FUNCTION tideline_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER console_journalentry_no_update_delete
    BEFORE UPDATE OR DELETE ON console_journalentry
    FOR EACH ROW EXECUTE FUNCTION tideline_refuse_change();
CREATE TRIGGER console_journalentry_no_truncate
    BEFORE TRUNCATE ON console_journalentry
    FOR EACH STATEMENT EXECUTE FUNCTION tideline_refuse_change();
"""

ALLOW_CHANGE = """
DROP TRIGGER IF EXISTS console_journalentry_no_truncate ON console_journalentry;
DROP TRIGGER IF EXISTS console_journalentry_no_update_delete ON console_journalentry;
DROP FUNCTION IF EXISTS tideline_refuse_change();
"""


def create_roles(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    for role in ROLES:
        Group.objects.get_or_create(name=role)


class Migration(migrations.Migration):
    dependencies = [
        ("console", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [
        migrations.RunPython(create_roles, migrations.RunPython.noop),
        migrations.RunSQL(REFUSE_CHANGE, ALLOW_CHANGE),
    ]
