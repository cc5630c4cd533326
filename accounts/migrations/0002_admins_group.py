"""The ``admins`` group (accounts, groups, inventory) apart from ``ops`` (runbooks), with their
admin permissions; no ops member may add or change users or groups."""
from django.contrib.auth.management import create_permissions
from django.db import migrations

ADMINS = "admins"
ADMIN_PERMISSIONS = [f"{app}.{verb}_{model}" for app, model in (("auth", "user"), ("auth", "group"),
                                                                 ("inventory", "productionhost"),
                                                                 ("inventory", "hypervisor"))
                     for verb in ("add", "change", "delete", "view")]
OPS_PERMISSIONS = [f"runbooks.{verb}_{model}" for model in ("runbook", "stepspec")
                   for verb in ("add", "change", "delete", "view")] + \
                  ["inventory.view_productionhost", "inventory.view_hypervisor"]


def forwards(apps, schema_editor):
    # Permission rows are normally made after all migrations; make them now so the groups can hold them.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")

    def perms(names):
        out = []
        for name in names:
            app, codename = name.split(".")
            out.append(Permission.objects.get(content_type__app_label=app, codename=codename))
        return out

    admins, _ = Group.objects.get_or_create(name=ADMINS)
    admins.permissions.add(*perms(ADMIN_PERMISSIONS))
    ops, _ = Group.objects.get_or_create(name="ops")
    ops.permissions.add(*perms(OPS_PERMISSIONS))
    ops.permissions.remove(*Permission.objects.filter(content_type__app_label="auth"))


def backwards(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name=ADMINS).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0001_groups"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("inventory", "0001_initial"),
        ("runbooks", "0001_initial"),
    ]
    operations = [migrations.RunPython(forwards, backwards)]
