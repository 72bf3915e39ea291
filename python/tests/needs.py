"""The skip policy of the test suite: something a test needs (a module, a
server, a tool) that is missing fails the test when the CI variable is set,
so that a CI that lost an install step does not stay green; elsewhere the
test is skipped with one line saying why (ctest runs pytest with -rs)."""
import importlib
import os

import pytest


def in_ci():
    return os.environ.get("CI", "") not in ("", "0", "false")


def need(available, why):
    """Skips (or, in CI, fails) the calling test unless `available`."""
    if not available:
        if in_ci():
            pytest.fail("CI: " + why, pytrace=False)
        pytest.skip(why)


def need_module(name, why=None):
    """Imports `name`; a missing module skips the whole test file (fails in CI)."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        reason = why or f"Python module {name} is not installed ({e}); scripts/install-deps.sh installs it"
        if in_ci():
            pytest.fail("CI: " + reason, pytrace=False)
        pytest.skip(reason, allow_module_level=True)
