import pytest

from tests.fixtures.rabbit import settings_for, vhost
from tests.integration.deploy_support import _missing


@pytest.fixture
def rabbit_vhost():
    with vhost() as name:
        yield name


@pytest.fixture
def settings(rabbit_vhost):
    return settings_for(rabbit_vhost)


@pytest.fixture
def trace_dir(tmp_path, monkeypatch):
    directory = tmp_path / "traces"
    directory.mkdir()
    monkeypatch.setenv("APPSVC_DR_TEST_DIR", str(directory))
    return directory


@pytest.fixture(scope="module")
def yaml():
    try:
        import yaml as pyyaml
    except ImportError:
        _missing("PyYAML is not installed (it is a test dependency of tests/integration/test_deploy_*.py)")
    return pyyaml
