#!/usr/bin/env python3
"""Runs a Lambda bootstrap the way the Lambda service does, and times it.

A minimal Lambda Runtime API (the HTTP interface a `provided.al2023` bootstrap polls:
GET /2018-06-01/runtime/invocation/next, POST …/{id}/response and …/{id}/error) on a
loopback port. It starts the bootstrap with AWS_LAMBDA_RUNTIME_API pointing at itself,
hands it the same event N times, and reports:

  cold   time from process start to the first answered invocation (init + first event)
  warm   p50 / p99 of the following invocations (from handing out the event to its answer)
  rss    the bootstrap's peak resident memory (VmHWM)

Usage: lambda_runtime.py BOOTSTRAP EVENT.json INVOCATIONS [NAME=VALUE ...]
"""
import http.server
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid

bootstrap, event_path, invocations = sys.argv[1], sys.argv[2], int(sys.argv[3])
extra_env = dict(a.split("=", 1) for a in sys.argv[4:])
event = open(event_path, "rb").read()

lock = threading.Condition()
pending = list(range(invocations))
handed = {}      # request id -> monotonic time handed out
answers = []     # (index, seconds, status code in the answer)
errors = []


class Api(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        if not self.path.endswith("/runtime/invocation/next"):
            self.send_error(404)
            return
        with lock:
            while not pending:
                lock.wait()
            index = pending.pop(0)
        request_id = str(uuid.uuid4())
        handed[request_id] = (index, time.monotonic())
        self.send_response(200)
        self.send_header("Lambda-Runtime-Aws-Request-Id", request_id)
        self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 30000))
        self.send_header("Lambda-Runtime-Invoked-Function-Arn",
                         "arn:aws:lambda:us-east-1:123456789012:function:query")
        self.send_header("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(event)))
        self.end_headers()
        self.wfile.write(event)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        parts = self.path.split("/")
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()
        if self.path.endswith("/init/error"):
            errors.append(("init", body.decode(errors="replace")))
        elif len(parts) >= 6 and parts[-1] in ("response", "error"):
            index, handed_at = handed.pop(parts[-2])
            status = None
            if parts[-1] == "response":
                try:
                    status = json.loads(body).get("statusCode")
                except ValueError:
                    pass
            else:
                errors.append((index, body.decode(errors="replace")))
            with lock:
                answers.append((index, time.monotonic() - handed_at, status, time.monotonic()))
                lock.notify_all()


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Api)
threading.Thread(target=server.serve_forever, daemon=True).start()
env = dict(os.environ)
env.update({
    "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{server.server_address[1]}",
    "AWS_LAMBDA_FUNCTION_NAME": "query",
    "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1769"),
    "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/query",
    "AWS_LAMBDA_LOG_STREAM_NAME": "bench",
})
env.update(extra_env)
started = time.monotonic()
proc = subprocess.Popen([bootstrap], env=env, stdout=subprocess.DEVNULL,
                        stderr=open(os.environ.get("BOOTSTRAP_LOG", os.devnull), "w"))
deadline = started + 300
with lock:
    while len(answers) < invocations and time.monotonic() < deadline and proc.poll() is None and not errors:
        lock.wait(timeout=0.5)
rss_kib = None
try:
    for line in open(f"/proc/{proc.pid}/status"):
        if line.startswith("VmHWM:"):
            rss_kib = int(line.split()[1])
except OSError:
    pass
proc.terminate()
proc.wait()
server.shutdown()
if errors or len(answers) < invocations:
    print(f"failed: {len(answers)}/{invocations} answered; errors: {errors[:3]}", file=sys.stderr)
    sys.exit(1)
answers.sort()
statuses = {a[2] for a in answers}
if statuses != {200}:
    print(f"failed: statuses {statuses}", file=sys.stderr)
    sys.exit(1)
cold = answers[0][3] - started
warm = sorted(a[1] * 1000 for a in answers[1:])
p = lambda q: warm[min(len(warm) - 1, int(q * len(warm)))]
print(json.dumps({
    "cold_start_to_first_answer_ms": round(cold * 1000, 1),
    "first_invocation_ms": round(answers[0][1] * 1000, 1),
    "warm_p50_ms": round(statistics.median(warm), 2),
    "warm_p99_ms": round(p(0.99), 2),
    "invocations": invocations,
    "peak_rss_mib": round(rss_kib / 1024, 1) if rss_kib else None,
}))
