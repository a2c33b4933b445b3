"""Several processes on one deployment, and processes killed: no acknowledged write lost,
no failed batch half there.

Two `chroma run` processes share one deployment (one data directory on the local backend;
one bucket, set of tables and KMS key on the AWS backend) while a `chroma compact` loop
runs beside them. Eight writer threads per server add, upsert and delete records over
HTTP for `CHROMA_STRESS_SECONDS` (default 20; the hardening issue's figure is 120). Each
thread owns its ids and keeps a model of what it was told was written. Afterwards both
servers must answer exactly the model: every acknowledged write present once, every
batch that failed either wholly applied or not at all, and no answer a 5xx other than a
503 that carries Retry-After. The second test kills a server and a compaction with
SIGKILL at random moments, round after round, with the same checks.
"""

import os
import random
import subprocess
import threading
import time
from typing import Dict, List, Optional, Tuple

import httpx

from conftest import ChromaServer, chroma_bin

STRESS_SECONDS = float(os.environ.get("CHROMA_STRESS_SECONDS", "20"))
KILL_ROUNDS = int(os.environ.get("CHROMA_KILL_ROUNDS", "20"))
THREADS_PER_SERVER = 8
DIM = 8
BASE = "/api/v2/tenants/default_tenant/databases/default_database/collections"

Row = Tuple[Tuple[float, ...], str, int]  # embedding, document, metadata "v"


class Writer:
    """One thread's writes and its model of them."""

    def __init__(self, name: str, collection: str, seed: int):
        self.name = name
        self.collection = collection
        self.rng = random.Random(seed)
        self.model: Dict[str, Row] = {}
        # Batches whose outcome is unknown: (ids, state before, state after); their ids are
        # never written again.
        self.unknown: List[Tuple[List[str], Dict[str, Optional[Row]], Dict[str, Optional[Row]]]] = []
        self.retired: set = set()
        self.next_id = 0
        self.acked = 0
        self.unavailable = 0
        self.violations: List[str] = []

    def row(self) -> Row:
        v = self.rng.randrange(1_000_000)
        emb = tuple(round(self.rng.uniform(-1, 1), 3) for _ in range(DIM))
        return emb, f"{self.name} doc {v}", v

    def fresh_ids(self, n: int) -> List[str]:
        ids = [f"{self.name}-{self.next_id + i}" for i in range(n)]
        self.next_id += n
        return ids

    def live(self) -> List[str]:
        return [i for i in self.model if i not in self.retired]

    def one_op(self, http: httpx.Client, port: int, killed: bool) -> bool:
        """One write; false when the server could not be reached (expected if `killed`)."""
        kind = self.rng.choices(["add", "upsert", "delete"], weights=[5, 3, 2])[0]
        live = self.live()
        if kind == "delete" and not live:
            kind = "add"
        if kind == "add":
            ids = self.fresh_ids(self.rng.randint(1, 20))
        elif kind == "upsert":
            old = self.rng.sample(live, min(len(live), self.rng.randint(0, 10)))
            ids = old + self.fresh_ids(self.rng.randint(0, 10) if old else self.rng.randint(1, 10))
        else:
            ids = self.rng.sample(live, min(len(live), self.rng.randint(1, 5)))
        before = {i: self.model.get(i) for i in ids}
        if kind == "delete":
            after: Dict[str, Optional[Row]] = {i: None for i in ids}
            body = {"ids": ids}
        else:
            after = {i: self.row() for i in ids}
            body = {
                "ids": ids,
                "embeddings": [list(after[i][0]) for i in ids],
                "documents": [after[i][1] for i in ids],
                "metadatas": [{"v": after[i][2], "writer": self.name} for i in ids],
            }
        try:
            url = f"http://127.0.0.1:{port}{BASE}/{self.collection}/{kind}"
            r = http.post(url, json=body)
        except httpx.HTTPError as e:
            if not killed:
                self.violations.append(f"{kind}: {type(e).__name__}: {e}")
            self.settle_unknown(ids, before, after)
            return False
        if r.status_code < 300:
            self.acked += 1
            for i, row in after.items():
                if row is None:
                    self.model.pop(i, None)
                else:
                    self.model[i] = row
            return True
        if r.status_code == 503 and r.headers.get("retry-after"):
            self.unavailable += 1
        else:
            self.violations.append(f"{kind}: {r.status_code} {r.text[:300]}")
        self.settle_unknown(ids, before, after)
        return True

    def settle_unknown(self, ids, before, after) -> None:
        self.unknown.append((ids, before, after))
        self.retired.update(ids)
        for i in ids:
            self.model.pop(i, None)

    def run(self, port: int, until: float, killed: bool = False) -> None:
        """Writes until `until`, or (when the server may be killed) until it is gone."""
        with httpx.Client(timeout=120) as http:
            while time.monotonic() < until:
                if not self.one_op(http, port, killed):
                    return


def check(port: int, collection: str, writers: List[Writer]) -> int:
    """The server answers exactly the writers' models; returns the record count."""
    found = read_all(port, collection)
    assert count(port, collection) == len(found)
    expected: Dict[str, Row] = {}
    for w in writers:
        expected.update(w.model)
    unknown = {i for w in writers for ids, _, _ in w.unknown for i in ids}
    known = {i: row for i, row in found.items() if i not in unknown}
    missing = sorted(set(expected) - set(known))
    extra = sorted(set(known) - set(expected))
    assert not missing and not extra, (missing[:10], extra[:10])
    wrong = [i for i, row in expected.items() if known[i] != row]
    assert wrong == [], [(i, known[i], expected[i]) for i in wrong[:5]]
    for w in writers:
        for ids, before, after in w.unknown:
            state = {i: found.get(i) for i in ids}
            assert state in (before, after), (ids, state, before, after)
    return len(found)


def create_collection(port: int) -> str:
    r = httpx.post(
        f"http://127.0.0.1:{port}{BASE}",
        json={"name": "stress", "get_or_create": True},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    return r.json()["id"]


def read_all(port: int, collection: str) -> Dict[str, Row]:
    """Every record of the collection, page by page."""
    out: Dict[str, Row] = {}
    with httpx.Client(timeout=120) as http:
        offset = 0
        while True:
            r = http.post(
                f"http://127.0.0.1:{port}{BASE}/{collection}/get",
                json={
                    "limit": 2000,
                    "offset": offset,
                    "include": ["embeddings", "documents", "metadatas"],
                },
            )
            assert r.status_code == 200, r.text
            page = r.json()
            for i, emb, doc, meta in zip(
                page["ids"], page["embeddings"], page["documents"], page["metadatas"]
            ):
                assert i not in out, f"{i} returned twice"
                out[i] = (tuple(round(x, 3) for x in emb), doc, meta["v"])
            if len(page["ids"]) < 2000:
                return out
            offset += len(page["ids"])


def count(port: int, collection: str) -> int:
    r = httpx.get(f"http://127.0.0.1:{port}{BASE}/{collection}/count", timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def compact_loop(env: dict, path, stop: threading.Event, runs: List[int], failures: List[str]) -> None:
    while not stop.is_set():
        p = subprocess.run(
            [chroma_bin(), "compact", "--path", str(path)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        runs[0] += 1
        if p.returncode != 0:
            failures.append(p.stderr[-1000:])
        stop.wait(0.5)


def test_two_servers_and_a_compactor_lose_no_acknowledged_write(tmp_path):
    path = tmp_path / "data"
    servers = [ChromaServer(path, tmp_path / f"server-{n}.log") for n in "ab"]
    for s in servers:
        s.start()
    stop = threading.Event()
    compactions = [0]
    compact_failures: List[str] = []
    compactor = threading.Thread(
        target=compact_loop, args=(servers[0].env(), path, stop, compactions, compact_failures)
    )
    try:
        collection = create_collection(servers[0].port)
        writers = [
            Writer(f"{'ab'[n]}{t}", collection, seed=100 * n + t)
            for n in range(len(servers))
            for t in range(THREADS_PER_SERVER)
        ]
        until = time.monotonic() + STRESS_SECONDS
        threads = [
            threading.Thread(target=w.run, args=(servers[n // THREADS_PER_SERVER].port, until))
            for n, w in enumerate(writers)
        ]
        compactor.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stop.set()
        compactor.join()

        violations = [v for w in writers for v in w.violations]
        assert violations == [], violations[:10]
        assert compact_failures == [], compact_failures[:3]
        for s in servers:
            records = check(s.port, collection, writers)

        acked = sum(w.acked for w in writers)
        unavailable = sum(w.unavailable for w in writers)
        print(
            f"\nstress: {len(writers)} writers for {STRESS_SECONDS:.0f} s: {acked} writes "
            f"acknowledged, {unavailable} answered 503, {sum(len(w.unknown) for w in writers)} "
            f"of unknown outcome, {records} records; {compactions[0]} compactions"
        )
        assert acked > 0
    finally:
        stop.set()
        if compactor.is_alive():
            compactor.join()
        for s in servers:
            assert s.stop() == 0


def test_kill_9_while_writing_and_compacting_loses_no_acknowledged_write(tmp_path):
    """`CHROMA_KILL_ROUNDS` (default 20) rounds: a server and a `chroma compact` run are
    killed with SIGKILL at a random moment while four threads write; after every round the
    data must still read whole, and at the end it must be exactly what was acknowledged."""
    path = tmp_path / "data"
    server = ChromaServer(path, tmp_path / "server.log")
    server.start()
    rng = random.Random(7)
    killed_compactions = 0
    try:
        collection = create_collection(server.port)
        writers = [Writer(f"k{t}", collection, seed=1000 + t) for t in range(4)]
        for _ in range(KILL_ROUNDS):
            if server.proc is None:
                server.start()
                # What the last kill left must read whole (no manifest naming a missing
                # object, nothing collected that is still referenced).
                check(server.port, collection, writers)
            compactor = subprocess.Popen(
                [chroma_bin(), "compact", "--path", str(path)],
                env=server.env(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            until = time.monotonic() + 30
            threads = [
                threading.Thread(target=w.run, args=(server.port, until, True)) for w in writers
            ]
            for t in threads:
                t.start()
            time.sleep(rng.uniform(0.2, 1.5))
            server.proc.kill()
            server.proc.wait()
            server.proc = None
            if compactor.poll() is None:
                compactor.kill()
                killed_compactions += 1
            compactor.wait()
            for t in threads:
                t.join()

        server.start()
        check(server.port, collection, writers)
        done = subprocess.run(
            [chroma_bin(), "compact", "--path", str(path)],
            env=server.env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        records = check(server.port, collection, writers)
        violations = [v for w in writers for v in w.violations]
        assert violations == [], violations[:10]
        print(
            f"\nkill -9: {KILL_ROUNDS} rounds ({killed_compactions} compactions killed too): "
            f"{sum(w.acked for w in writers)} writes acknowledged, "
            f"{sum(len(w.unknown) for w in writers)} cut off by the kill, {records} records"
        )
    finally:
        server.stop()
