"""The server of the Python compatibility tests (`ChromaServer` in
tests/python/conftest.py), for the framework tests: one `chroma run` per test, on a data
directory that a test may reopen."""

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "chroma_python_conftest", Path(__file__).resolve().parents[1] / "python" / "conftest.py"
)
_servers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_servers)
ChromaServer = _servers.ChromaServer


@pytest.fixture
def server(tmp_path):
    s = ChromaServer(tmp_path / "data", tmp_path / "server.log")
    s.start()
    yield s
    assert s.stop() == 0
