"""The suite's own settings: every test runs under pytest-timeout, so a hang fails instead of stalling CI."""


def test_every_test_has_a_timeout(pytestconfig):
    assert 0 < float(pytestconfig.getini("timeout")) <= 600
    assert pytestconfig.pluginmanager.hasplugin("timeout")
