"""Starts the `chroma` binary for the compatibility tests.

The binary is `$CHROMA_BIN` (default: `target/debug/chroma` of this repository). Each
server runs `chroma run --path <tmp> --port 0 --allow-reset` with a test master key; the
listening port is read from its `listening on http://HOST:PORT` line.

With `CHROMA_TEST_BACKEND=aws` (and moto on `AWS_ENDPOINT_URL`) each data directory
stands for a deployment of its own on the emulator instead: `chroma aws init` creates its
bucket, tables and KMS key once, and the server runs with `--backend aws` on them.
"""

import os
import pathlib
import queue
import re
import signal
import subprocess
import threading

import chromadb
import pytest
from chromadb.config import Settings

REPO = pathlib.Path(__file__).resolve().parents[2]
TEST_MASTER_KEY = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
LISTENING = re.compile(r"listening on https?://([0-9.]+):(\d+)")
START_TIMEOUT_S = 60


def chroma_bin() -> str:
    return os.environ.get("CHROMA_BIN") or str(REPO / "target" / "debug" / "chroma")


def backend_env(path: pathlib.Path) -> dict:
    """The environment that selects the backend for the deployment kept at `path`."""
    if os.environ.get("CHROMA_TEST_BACKEND", "local") != "aws":
        return {}
    env_file = path.with_name(path.name + ".aws-env")
    if not env_file.exists():
        name = "py-" + os.urandom(6).hex()
        out = subprocess.run(
            [chroma_bin(), "aws", "init", "--bucket", name, "--table-prefix", name + "-"],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
        env_file.write_text(out)
    env = {}
    for line in env_file.read_text().splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = value.strip("'")
    assert env.get("CHROMA_BACKEND") == "aws", env
    return env


class ChromaServer:
    """One `chroma run` process over a data directory."""

    def __init__(self, path: pathlib.Path, log_path: pathlib.Path, extra_args=()):
        self.path = path
        self.log_path = log_path
        self.extra_args = list(extra_args)
        self.proc = None
        self.port = None

    def env(self) -> dict:
        """The environment of this server's processes (also for `chroma keys`)."""
        env = dict(os.environ)
        for var in ("CHROMA_HOST", "CHROMA_PORT", "CHROMA_PATH", "CHROMA_MASTER_KEY_FILE", "CHROMA_BACKEND"):
            env.pop(var, None)
        env["CHROMA_MASTER_KEY"] = TEST_MASTER_KEY
        env.update(backend_env(self.path))
        env.setdefault("RUST_LOG", "info")
        return env

    def start(self) -> None:
        env = self.env()
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen(
            [chroma_bin(), "run", "--path", str(self.path), "--port", "0", "--allow-reset"]
            + self.extra_args,
            stdout=subprocess.PIPE,
            stderr=log,
            env=env,
            text=True,
        )
        log.close()
        lines: "queue.Queue[str]" = queue.Queue()

        def pump() -> None:
            for line in self.proc.stdout:
                lines.put(line)
            lines.put("")

        threading.Thread(target=pump, daemon=True).start()
        while True:
            try:
                line = lines.get(timeout=START_TIMEOUT_S)
            except queue.Empty:
                self.proc.kill()
                raise RuntimeError(f"chroma did not start; see {self.log_path}")
            if line == "":
                raise RuntimeError(
                    f"chroma exited with {self.proc.wait()}: {self.log_path.read_text()[-2000:]}"
                )
            m = LISTENING.search(line)
            if m:
                self.port = int(m.group(2))
                return

    def stop(self) -> int:
        """Stops the server with SIGTERM (graceful) and returns its exit code."""
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.proc = None
        return code

    def settings(self) -> Settings:
        return Settings(allow_reset=True, anonymized_telemetry=False)

    def client(self, **kwargs) -> chromadb.ClientAPI:
        return chromadb.HttpClient(
            host="127.0.0.1", port=self.port, settings=self.settings(), **kwargs
        )

    def admin(self) -> chromadb.AdminAPI:
        settings = Settings(
            chroma_api_impl="chromadb.api.fastapi.FastAPI",
            chroma_server_host="127.0.0.1",
            chroma_server_http_port=self.port,
            allow_reset=True,
            anonymized_telemetry=False,
        )
        return chromadb.AdminClient(settings)


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("chroma")
    s = ChromaServer(base / "data", base / "server.log")
    s.start()
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="session")
def spann_server(tmp_path_factory):
    """A server run with `--knn-index spann` (Chroma's cloud flavour)."""
    base = tmp_path_factory.mktemp("spann")
    s = ChromaServer(base / "data", base / "server.log", extra_args=["--knn-index", "spann"])
    s.start()
    yield s
    assert s.stop() == 0


@pytest.fixture
def client(server):
    c = server.client()
    c.reset()
    return c
