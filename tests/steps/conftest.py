import pytest


@pytest.fixture
def repaired_clone(make_test_host):
    """A second host standing in for the clone, with the vendor's procedure already run on it:
    its datafiles were rebuilt from the backup (the scenario's export)."""
    clone = make_test_host("clone", scenario=True)
    clone.run("minidb-service stop; minidb-reinit --from /var/backups/minidb/latest.tar.gz")
    return clone
