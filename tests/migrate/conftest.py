"""The server of the Python compatibility tests (`ChromaServer` in tests/python/conftest.py,
loaded as the framework tests load it), for the migration tests, and `chroma import
--from-chroma` run with the same environment (the same master key and backend)."""

import importlib.util
import pathlib
import subprocess

_spec = importlib.util.spec_from_file_location(
    "chroma_python_conftest",
    pathlib.Path(__file__).resolve().parents[1] / "python" / "conftest.py",
)
_servers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_servers)

IMPORT_TIMEOUT_S = 600


class ChromaServer(_servers.ChromaServer):
    """`chroma run` over a data directory, as a context manager."""

    def client(self, tenant: str, database: str):
        return super().client(tenant=tenant, database=database)

    def __enter__(self) -> "ChromaServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        code = self.stop()
        if exc[0] is None:
            assert code == 0, f"chroma run exited with {code}; see {self.log_path}"


def run_import(source: pathlib.Path, data: pathlib.Path) -> subprocess.CompletedProcess:
    """`chroma import --from-chroma SOURCE --path DATA`, its exit code and output kept."""
    env = ChromaServer(data, data.with_name(data.name + ".log")).env()
    return subprocess.run(
        [_servers.chroma_bin(), "import", "--from-chroma", str(source), "--path", str(data)],
        capture_output=True,
        text=True,
        env=env,
        timeout=IMPORT_TIMEOUT_S,
    )
