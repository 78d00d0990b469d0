"""Fixtures: a tiny RiC run directory and a `ric serve` process over it."""

import pytest

from tests.server.support import Server, build_run


@pytest.fixture(scope="session")
def ric_run(tmp_path_factory, tiny_model_dir):
    return build_run(tmp_path_factory.mktemp("serve-ric"), tiny_model_dir)


@pytest.fixture(scope="module")
def server(ric_run):
    srv = Server(ric_run, "--max-tokens", "64", "--max-batch-size", "16", "--batch-window-ms", "200")
    yield srv
    srv.stop()
