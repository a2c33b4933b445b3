"""Schema-driven fuzzing of the HTTP API: schemathesis generates requests from the server's
own `/openapi.json` (valid ones, and ones that break the schema on purpose) against
`chroma run --auth` with an admin key, for a bounded time.

Every response must be a non-5xx answer whose status code is documented for its operation,
whose content type is the documented one and whose body conforms to the published schema;
a request that breaks the schema must be refused with a 4xx. Where the two disagreed, the
server or the schema was fixed.

`CHROMA_SCHEMATHESIS_SECONDS` bounds the run (default 45 s per backend);
`CHROMA_SCHEMATHESIS_SEED` repeats a run (schemathesis prints the seed it used).
"""

import json
import os
import pathlib
import subprocess
import sys
import urllib.request

from conftest import ChromaServer, chroma_bin

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
    ]
)

def test_openapi_schema_fuzzing(tmp_path):
    s = ChromaServer(tmp_path / "data", tmp_path / "server.log", extra_args=["--auth"])
    key = subprocess.run(
        [chroma_bin(), "keys", "create", "--path", str(s.path), "--grant", "*/*/*:read,write,admin"],
        check=True,
        capture_output=True,
        text=True,
        env=s.env(),
        timeout=120,
    ).stdout.splitlines()[-1]
    s.start()
    try:
        base = f"http://127.0.0.1:{s.port}"
        request = urllib.request.Request(
            f"{base}/openapi.json", headers={"Authorization": f"Bearer {key}"}
        )
        with urllib.request.urlopen(request, timeout=30) as r:
            schema = json.load(r)
        schema_path = tmp_path / "openapi.json"
        schema_path.write_text(json.dumps(schema))

        seconds = os.environ.get("CHROMA_SCHEMATHESIS_SECONDS", "45")
        cmd = [
            str(pathlib.Path(sys.executable).with_name("schemathesis")),
            "run",
            str(schema_path),
            "--url",
            base,
            "--header",
            f"Authorization: Bearer {key}",
            "--checks",
            CHECKS,
            "--max-time",
            seconds,
            "--workers",
            "2",
            "--request-timeout",
            "30",
            "--generation-database",
            "none",
            "--no-color",
        ]
        seed = os.environ.get("CHROMA_SCHEMATHESIS_SEED")
        if seed:
            cmd += ["--seed", seed]
        run = subprocess.run(
            cmd, capture_output=True, text=True, timeout=int(seconds) + 300, cwd=tmp_path
        )
        output = run.stdout + run.stderr
        print(output[-6000:])
        assert run.returncode == 0, output[-12000:]
    finally:
        assert s.stop() == 0
