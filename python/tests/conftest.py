import pytest


@pytest.fixture
def cache_dir(tmp_path):
    return str(tmp_path / "layers")
