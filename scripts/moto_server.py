"""moto's server with one request at a time.

moto's threaded server has no lock around a DynamoDB call: it checks a condition, then
applies the update, so two conditional writes racing each other can both win (seen here
2 times in 60 runs of the catalog conformance suite). AWS never lets that happen, and
the suites test exactly that, so the emulator serves requests one by one. Same arguments
as `moto_server`.
"""

import sys
import threading

import moto.server as server

_run_simple = server.run_simple


def run_simple(host, port, app, **kwargs):
    lock = threading.Lock()

    def serialized(environ, start_response):
        with lock:
            return list(app(environ, start_response))

    _run_simple(host, port, serialized, **kwargs)


server.run_simple = run_simple

if __name__ == "__main__":
    server.main(sys.argv[1:])
