"""`chroma import --from-chroma DIR --path DATA` against persist directories written by the
real Chroma (the `chromadb` package pinned in requirements.txt).

The real package writes a persist directory (`chromadb.PersistentClient`) with several
tenants, databases and collections — every space, non-default HNSW parameters, metadata of
every type, documents and URIs, deletes, updates, upserts, a collection large enough that
Chroma flushes its HNSW index to disk and purges its write-ahead queue (so its vectors live
in the HNSW files, and the writes after that only in the queue), small ones whose vectors
live only in the queue, empty ones — and then answers, reopened, what every collection holds
and what a few fixed queries return: that is the reference. `chroma import` copies the
directory into a data directory, and a `chroma run` on it must answer the same through
`chromadb.HttpClient`.

No embedding function is installed (there is no network for its model): every collection
is made with `embedding_function=None`, and every write that carries a document carries its
embedding too.
"""

import hashlib
import pathlib
import shutil
import sqlite3

import chromadb
import numpy as np
import pytest
from chromadb.config import Settings
from chromadb.errors import NotFoundError

from conftest import ChromaServer, run_import

DEFAULT_TENANT = "default_tenant"
DEFAULT_DATABASE = "default_database"
SECOND_DATABASE = "db_two"
SECOND_TENANT = "tenant_two"
SECOND_TENANT_DATABASE = "tenant_db"
EMPTY_DATABASE = "empty_db"  # in SECOND_TENANT, without collections

BIG = (DEFAULT_TENANT, DEFAULT_DATABASE, "big_cosine")
# Every collection the source holds, as (tenant, database, name).
COLLECTIONS = [
    BIG,
    (DEFAULT_TENANT, DEFAULT_DATABASE, "small_l2"),
    (DEFAULT_TENANT, DEFAULT_DATABASE, "mid_ip"),
    (DEFAULT_TENANT, DEFAULT_DATABASE, "cosine_small"),
    (DEFAULT_TENANT, DEFAULT_DATABASE, "empty_coll"),
    (DEFAULT_TENANT, SECOND_DATABASE, "small_l2"),  # the same name in another database
    (DEFAULT_TENANT, SECOND_DATABASE, "drained"),  # records added, then all deleted
    (SECOND_TENANT, SECOND_TENANT_DATABASE, "tenant_coll"),
]

BIG_RECORDS = 2500
BIG_DIM = 16
BIG_BATCH = 250
# The big collection's queries search with this ef: over 2,500 vectors Chroma's HNSW then
# (practically) finds the exact neighbours, and so should the imported collection; still,
# HNSW is approximate and its graph is built anew by the importer or the server, so the
# big collection is compared by recall instead of exact ids (see RECALL).
BIG_EF_SEARCH = 500
RECALL = 0.9
N_RESULTS = 10
QUERIES_PER_COLLECTION = 3

EMBEDDING_RTOL = 1e-5
DISTANCE_TOL = 1e-4


def _settings() -> Settings:
    return Settings(anonymized_telemetry=False)


def _persistent(path, tenant=DEFAULT_TENANT, database=DEFAULT_DATABASE):
    return chromadb.PersistentClient(
        path=str(path), settings=_settings(), tenant=tenant, database=database
    )


def _vectors(rng, n, dim):
    # Values a float32 holds exactly, so that only the store's own rounding remains.
    return rng.standard_normal((n, dim)).astype(np.float32).astype(float).tolist()


# -- writing the source with the real Chroma ---------------------------------------------


def _write_big(client, rng):
    col = client.create_collection(
        BIG[2],
        embedding_function=None,
        metadata={"kind": "big", "dim": BIG_DIM},
        configuration={"hnsw": {"space": "cosine", "ef_search": BIG_EF_SEARCH}},
    )
    for start in range(0, BIG_RECORDS, BIG_BATCH):
        ids = [f"big-{i:05d}" for i in range(start, start + BIG_BATCH)]
        col.add(
            ids=ids,
            embeddings=_vectors(rng, BIG_BATCH, BIG_DIM),
            documents=[f"document {i}" for i in range(start, start + BIG_BATCH)],
            metadatas=[
                {"n": i, "group": f"g{i % 7}", "even": i % 2 == 0, "w": i / 7}
                for i in range(start, start + BIG_BATCH)
            ],
        )
    return col


def _write_big_after_flush(col, rng):
    """Writes after Chroma flushed the big collection's HNSW: they live only in the queue,
    and some change records whose vectors are in the HNSW files."""
    new = [f"big-{i:05d}" for i in range(BIG_RECORDS, BIG_RECORDS + 40)]
    col.add(
        ids=new,
        embeddings=_vectors(rng, len(new), BIG_DIM),
        documents=[f"late {i}" for i in new],
        metadatas=[{"late": True, "n": i} for i in range(len(new))],
    )
    # Deleted: records flushed to the HNSW files, records only in the queue, a new one.
    col.delete(
        ids=[f"big-{i:05d}" for i in list(range(3, 2000, 97)) + list(range(2100, 2500, 53))]
        + [new[7]]
    )
    # Updated with a new vector: metadata merged (a key set to None is removed).
    updated = [f"big-{i:05d}" for i in range(10, 1500, 75)]
    col.update(
        ids=updated,
        embeddings=_vectors(rng, len(updated), BIG_DIM),
        documents=[f"updated {i}" for i in updated],
        metadatas=[{"group": None, "updated": True, "score": 0.5} for _ in updated],
    )
    # Updated without a vector (no document either, so no embedding function is needed):
    # the vector stays the one in the HNSW files.
    col.update(
        ids=[f"big-{i:05d}" for i in (11, 12, 13)],
        metadatas=[{"touched": 1}, {"touched": 2, "even": None}, {"touched": 3}],
    )
    # Upserted: existing ids (from the HNSW files and from the queue) and new ones.
    upserted = [f"big-{i:05d}" for i in list(range(20, 2000, 199)) + list(range(2200, 2500, 61))]
    upserted += [f"big-up-{i}" for i in range(10)]
    col.upsert(
        ids=upserted,
        embeddings=_vectors(rng, len(upserted), BIG_DIM),
        documents=[f"upserted {i}" for i in upserted],
        metadatas=[{"upserted": True, "k": i} for i in range(len(upserted))],
    )


def _write_small_l2(client, rng):
    col = client.create_collection(
        "small_l2",
        embedding_function=None,
        metadata={"owner": "tests", "version": 3, "ratio": 0.25, "public": False},
        configuration={"hnsw": {"space": "l2"}},
    )
    n, dim = 60, 5
    ids = [f"s{i:03d}" for i in range(n)]
    metadatas = []
    for i in range(n):
        m = {"i": i, "f": i * 1.25 - 10, "b": i % 3 == 0, "s": f"text {i % 4}"}
        if i % 5 == 0:
            m["tags"] = ["a", "b"] if i % 10 == 0 else ["c"]
            m["ints"] = [i, i + 1, -i]
            m["floats"] = [0.5, i / 4]
            m["bools"] = [True, False]
        metadatas.append(m)
    col.add(
        ids=ids,
        embeddings=_vectors(rng, n, dim),
        metadatas=metadatas,
        documents=[f"doc {i}" if i % 6 else None for i in range(n)],
        uris=[f"s3://bucket/obj-{i}" if i % 4 == 0 else None for i in range(n)],
    )
    col.delete(ids=["s001", "s010", "s020", "s033", "s059"])
    upd = ["s002", "s004", "s005", "s012", "s040", "s041"]
    col.update(
        ids=upd,
        embeddings=_vectors(rng, len(upd), dim),
        metadatas=[
            {"i": None, "new_key": "added"},
            {"s": "changed", "b": None, "extra": 1.5},
            {"tags": ["z"], "ints": None},
            {"f": None},
            {"b": True, "s": None},
            {"list_now": [1, 2, 3]},
        ],
        documents=["new doc 2", "new doc 4", "new doc 5", "new doc 12", "new doc 40", "new doc 41"],
        uris=["file:///two", "file:///four", "s3://x/5", "s3://x/12", "s3://x/40", "s3://x/41"],
    )
    # A metadata-only update (no vector, no document).
    col.update(ids=["s007"], metadatas=[{"only_meta": True}])
    col.upsert(
        ids=["s003", "s006", "s050", "s100", "s101", "s102", "s103"],
        embeddings=_vectors(rng, 7, dim),
        metadatas=[
            {"upserted": 1},
            {"upserted": 2, "tags": ["x", "y"]},
            {"upserted": 3, "s": None},
            {"fresh": True},
            {"fresh": 1.5},
            {"fresh": "yes"},
            {"fresh": [4, 5]},
        ],
        documents=["up 3", "up 6", "up 50", "fresh 100", None, "fresh 102", "fresh 103"],
        uris=[None, "s3://u/6", None, "s3://u/100", None, None, "s3://u/103"],
    )
    return col


def _write_mid_ip(client, rng):
    # More records than Chroma's HNSW batch size (100), fewer than its sync threshold
    # (1,000): an index is built in memory, none is flushed; non-default HNSW parameters.
    col = client.create_collection(
        "mid_ip",
        embedding_function=None,
        metadata={"note": "inner product", "threshold": 0.75},
        configuration={
            "hnsw": {"space": "ip", "ef_search": 64, "max_neighbors": 24, "ef_construction": 150}
        },
    )
    n, dim = 300, 8
    col.add(
        ids=[f"m{i}" for i in range(n)],
        embeddings=_vectors(rng, n, dim),
        metadatas=[{"bucket": i % 10, "odd": i % 2 == 1} for i in range(n)],
        documents=[f"mid {i}" for i in range(n)],
    )
    col.delete(ids=[f"m{i}" for i in range(0, n, 13)])
    upd = [f"m{i}" for i in range(1, 100, 9)]
    col.update(
        ids=upd,
        embeddings=_vectors(rng, len(upd), dim),
        metadatas=[{"bucket": None, "moved": "yes"} for _ in upd],
    )
    col.upsert(
        ids=[f"m{i}" for i in (2, 5, 300, 301)],
        embeddings=_vectors(rng, 4, dim),
        documents=["mid up 2", "mid up 5", "mid new 300", "mid new 301"],
    )
    return col


def _write_cosine_small(client, rng):
    col = client.create_collection(
        "cosine_small",
        embedding_function=None,
        configuration={"hnsw": {"space": "cosine"}},
    )
    n, dim = 30, 6
    # Vectors of very different lengths: a cosine collection must keep them as written.
    vectors = (rng.standard_normal((n, dim)) * rng.uniform(0.01, 50, (n, 1))).astype(np.float32)
    col.add(
        ids=[f"c{i:02d}" for i in range(n)],
        embeddings=vectors.astype(float).tolist(),
        documents=[f"cos {i}" for i in range(n)],
    )
    col.delete(ids=["c00", "c15"])
    col.upsert(ids=["c01", "c30"], embeddings=_vectors(rng, 2, dim), metadatas=[{"u": 1}, {"u": 2}])
    return col


def _write_second_database(client, rng):
    col = client.create_collection(
        "small_l2", embedding_function=None, metadata={"db": "two"}
    )
    col.add(
        ids=[f"x{i}" for i in range(12)],
        embeddings=_vectors(rng, 12, 3),
        metadatas=[{"j": i, "label": f"x{i}"} for i in range(12)],
        documents=[f"second db {i}" for i in range(12)],
    )
    drained = client.create_collection("drained", embedding_function=None, metadata={"gone": True})
    drained.add(ids=[f"d{i}" for i in range(10)], embeddings=_vectors(rng, 10, 4))
    drained.delete(ids=[f"d{i}" for i in range(10)])


def _write_second_tenant(client, rng):
    col = client.create_collection(
        "tenant_coll",
        embedding_function=None,
        metadata={"tenant": "two", "n": 15},
        configuration={"hnsw": {"space": "ip"}},
    )
    col.add(
        ids=[f"t{i}" for i in range(15)],
        embeddings=_vectors(rng, 15, 4),
        metadatas=[{"t": i, "flag": i > 7} for i in range(15)],
        documents=[f"tenant doc {i}" for i in range(15)],
        uris=[f"https://example.com/{i}" for i in range(15)],
    )
    col.update(ids=["t3"], embeddings=_vectors(rng, 1, 4), metadatas=[{"t": None, "x": "y"}])


def write_source(path: pathlib.Path) -> None:
    rng = np.random.default_rng(20240601)
    client = _persistent(path)
    big = _write_big(client, rng)
    _write_small_l2(client, rng)
    _write_mid_ip(client, rng)
    _write_cosine_small(client, rng)
    client.create_collection("empty_coll", embedding_function=None)
    _write_big_after_flush(big, rng)

    admin = chromadb.AdminClient(
        Settings(is_persistent=True, persist_directory=str(path), anonymized_telemetry=False)
    )
    admin.create_database(SECOND_DATABASE, tenant=DEFAULT_TENANT)
    admin.create_tenant(SECOND_TENANT)
    admin.create_database(SECOND_TENANT_DATABASE, tenant=SECOND_TENANT)
    admin.create_database(EMPTY_DATABASE, tenant=SECOND_TENANT)
    _write_second_database(_persistent(path, database=SECOND_DATABASE), rng)
    _write_second_tenant(
        _persistent(path, tenant=SECOND_TENANT, database=SECOND_TENANT_DATABASE), rng
    )
    # Closes the directory: the clients above share one system per path.
    client.clear_system_cache()


# -- the reference: what the real Chroma answers --------------------------------------------


def query_vectors(dim: int, key) -> list:
    seed = int.from_bytes(hashlib.sha256(repr(key).encode()).digest()[:8], "little")
    return _vectors(np.random.default_rng(seed), QUERIES_PER_COLLECTION, dim)


def _plain(value):
    return value.tolist() if isinstance(value, np.ndarray) else value


def snapshot(col, dim) -> dict:
    """What one collection answers: everything a comparison needs, as plain values."""
    got = col.get(include=["embeddings", "documents", "metadatas", "uris"])
    order = sorted(range(len(got["ids"])), key=lambda k: got["ids"][k])
    records = {
        "ids": [got["ids"][k] for k in order],
        "embeddings": [list(map(float, _plain(got["embeddings"][k]))) for k in order],
        "documents": [got["documents"][k] for k in order],
        "metadatas": [got["metadatas"][k] for k in order],
        "uris": [got["uris"][k] for k in order],
    }
    queries = []
    if dim is not None:
        for q in query_vectors(dim, col.name):
            res = col.query(query_embeddings=[q], n_results=N_RESULTS, include=["distances"])
            queries.append((q, res["ids"][0], [float(d) for d in res["distances"][0]]))
    schema = col.schema.serialize_to_json() if col.schema is not None else None
    return {
        "count": col.count(),
        "metadata": col.metadata,
        "configuration": col.configuration_json,
        "schema": schema,
        "records": records,
        "queries": queries,
    }


def _dimensions(sqlite_path: pathlib.Path) -> tuple:
    con = sqlite3.connect(f"file:{sqlite_path}?mode=ro", uri=True)
    try:
        rows = con.execute(
            "SELECT c.name, c.dimension, d.name, d.tenant_id FROM collections c"
            " JOIN databases d ON c.database_id = d.id"
        ).fetchall()
        tenants = sorted(t for (t,) in con.execute("SELECT id FROM tenants"))
    finally:
        con.close()
    return {(t, db, name): dim for name, dim, db, t in rows}, tenants


def record_reference(path: pathlib.Path) -> dict:
    dims, tenants = _dimensions(path / "chroma.sqlite3")
    admin = chromadb.AdminClient(
        Settings(is_persistent=True, persist_directory=str(path), anonymized_telemetry=False)
    )
    ref = {"tenants": tenants, "databases": {}, "collections": {}, "names": {}}
    for tenant in tenants:
        dbs = sorted(d["name"] for d in admin.list_databases(tenant=tenant))
        ref["databases"][tenant] = dbs
        for db in dbs:
            client = _persistent(path, tenant=tenant, database=db)
            names = sorted(c.name for c in client.list_collections())
            ref["names"][(tenant, db)] = names
            for name in names:
                key = (tenant, db, name)
                col = client.get_collection(name, embedding_function=None)
                ref["collections"][key] = snapshot(col, dims[key])
    admin.clear_system_cache()
    return ref


def tree_digest(root: pathlib.Path) -> dict:
    """Every file under `root` with a digest of its content."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def data_digest(root: pathlib.Path) -> dict:
    """Like `tree_digest`, but an SQLite file (the data directory's catalog) by its rows:
    opening the catalog may bump the counters of its AUTOINCREMENT keys
    (`sqlite_sequence`) and rewrite pages without changing a row, which is no change."""
    digest = tree_digest(root)
    for name in digest:
        if name.endswith(".sqlite3"):
            con = sqlite3.connect(f"file:{root / name}?mode=ro", uri=True)
            try:
                rows = [r for r in con.iterdump() if "sqlite_sequence" not in r]
            finally:
                con.close()
            digest[name] = hashlib.sha256("\n".join(rows).encode()).hexdigest()
    return digest


@pytest.fixture(scope="session")
def source(tmp_path_factory):
    """The persist directory the real Chroma wrote, and what Chroma answers from it.

    The reference is read from a copy: opening a persist directory lets Chroma replay
    and flush its queue, and the import must read the directory as Chroma left it."""
    base = tmp_path_factory.mktemp("source")
    path = base / "persist"
    write_source(path)
    scratch = base / "reference-copy"
    shutil.copytree(path, scratch)
    reference = record_reference(scratch)
    return path, reference


@pytest.fixture(scope="session")
def imported(source, tmp_path_factory):
    path, _ = source
    before = tree_digest(path)
    data = tmp_path_factory.mktemp("imported") / "data"
    result = run_import(path, data)
    return data, result, before


@pytest.fixture(scope="session")
def server(imported, tmp_path_factory):
    data, result, _ = imported
    assert result.returncode == 0, f"import failed:\n{result.stdout}\n{result.stderr}"
    s = ChromaServer(data, tmp_path_factory.mktemp("server") / "server.log")
    with s:
        yield s


# -- comparing ------------------------------------------------------------------------------


def assert_embeddings_close(got, expected, what):
    """Each vector within EMBEDDING_RTOL of the reference's, relative to its length (a
    cosine collection's vectors are compared with what Chroma returned for them)."""
    assert len(got) == len(expected), what
    for k, (g, e) in enumerate(zip(got, expected)):
        g, e = np.asarray(g, dtype=float), np.asarray(e, dtype=float)
        assert g.shape == e.shape, f"{what}[{k}]: dimension {g.shape} != {e.shape}"
        err = float(np.linalg.norm(g - e))
        assert err <= EMBEDDING_RTOL * max(float(np.linalg.norm(e)), 1e-12), (
            f"{what}[{k}]: got {g.tolist()}, expected {e.tolist()}"
        )


def distance_close(got: float, expected: float) -> bool:
    # Float32 sums: 1e-4 absolute, or relative for the larger squared-L2 distances.
    return abs(got - expected) <= DISTANCE_TOL * max(1.0, abs(expected))


def hnsw_of_schema(schema):
    """The embedding's vector-index configuration in a serialized schema, less
    `num_threads` (Chroma sets it from the machine's cores)."""
    if schema is None:
        return None
    cfg = schema["keys"]["#embedding"]["float_list"]["vector_index"]["config"]
    hnsw = dict(cfg.get("hnsw") or {})
    hnsw.pop("num_threads", None)
    return {"space": cfg.get("space"), "hnsw": hnsw}


def strip_num_threads(value):
    if isinstance(value, dict):
        return {k: strip_num_threads(v) for k, v in value.items() if k != "num_threads"}
    if isinstance(value, list):
        return [strip_num_threads(v) for v in value]
    return value


def compare_collection(col, ref: dict, key) -> None:
    what = "/".join(key)
    assert col.count() == ref["count"], f"{what}: count"
    assert col.metadata == ref["metadata"], f"{what}: collection metadata"
    conf, ref_conf = col.configuration_json, ref["configuration"]
    assert conf["hnsw"] == ref_conf["hnsw"], f"{what}: configuration's hnsw (space, params)"
    assert conf == ref_conf, f"{what}: configuration"
    schema = col.schema.serialize_to_json() if col.schema is not None else None
    assert hnsw_of_schema(schema) == hnsw_of_schema(ref["schema"]), f"{what}: schema's vector index"
    assert strip_num_threads(schema) == strip_num_threads(ref["schema"]), f"{what}: schema"

    got = snapshot(col, None)["records"]
    exp = ref["records"]
    assert got["ids"] == exp["ids"], f"{what}: ids"
    assert got["documents"] == exp["documents"], f"{what}: documents"
    for i, g, e in zip(exp["ids"], got["metadatas"], exp["metadatas"]):
        assert g == e, f"{what}: metadata of {i}"
    assert got["uris"] == exp["uris"], f"{what}: uris"
    assert_embeddings_close(got["embeddings"], exp["embeddings"], f"{what}: embeddings")

    for n, (q, ref_ids, ref_dists) in enumerate(ref["queries"]):
        res = col.query(query_embeddings=[q], n_results=N_RESULTS, include=["distances"])
        ids, dists = res["ids"][0], [float(d) for d in res["distances"][0]]
        if key == BIG:
            assert len(ids) == len(ref_ids), f"{what}: query {n}: {ids} vs {ref_ids}"
            hits = set(ids) & set(ref_ids)
            assert len(hits) >= RECALL * len(ref_ids), (
                f"{what}: query {n}: recall {len(hits)}/{len(ref_ids)}: {ids} vs {ref_ids}"
            )
            expected = dict(zip(ref_ids, ref_dists))
            for i, d in zip(ids, dists):
                if i in expected:
                    assert distance_close(d, expected[i]), f"{what}: query {n}: distance of {i}"
        else:
            assert ids == ref_ids, f"{what}: query {n}: ids {ids} vs {ref_ids}"
            for i, d, e in zip(ids, dists, ref_dists):
                assert distance_close(d, e), f"{what}: query {n}: distance of {i}: {d} vs {e}"


def compare_all(server, reference) -> None:
    for key, ref in reference["collections"].items():
        tenant, db, name = key
        col = server.client(tenant, db).get_collection(name, embedding_function=None)
        compare_collection(col, ref, key)


# -- the tests ------------------------------------------------------------------------------


def test_source_is_what_the_scenario_needs(source):
    """The real Chroma laid the directory out as this test means it to: the big
    collection's HNSW flushed (index_metadata.pickle) with part of its writes purged from
    the queue, the small ones' vectors only in the queue; every collection referenced."""
    path, reference = source
    assert sorted(reference["collections"]) == sorted(COLLECTIONS)
    assert reference["tenants"] == sorted([DEFAULT_TENANT, SECOND_TENANT])
    assert reference["databases"][SECOND_TENANT] == sorted([SECOND_TENANT_DATABASE, EMPTY_DATABASE])
    assert reference["collections"][BIG]["count"] > BIG_RECORDS - 100

    con = sqlite3.connect(f"file:{path / 'chroma.sqlite3'}?mode=ro", uri=True)
    try:
        def vector_segment(key):
            tenant, db, name = key
            return con.execute(
                "SELECT s.id, c.id FROM segments s JOIN collections c ON s.collection = c.id"
                " JOIN databases d ON c.database_id = d.id"
                " WHERE s.scope = 'VECTOR' AND c.name = ? AND d.name = ? AND d.tenant_id = ?",
                (name, db, tenant),
            ).fetchone()

        def queued(collection_id):
            return con.execute(
                "SELECT count(*) FROM embeddings_queue WHERE topic LIKE ?",
                ("%/" + collection_id,),
            ).fetchone()[0]

        segment, collection_id = vector_segment(BIG)
        assert (path / segment / "index_metadata.pickle").exists()
        writes = queued(collection_id)
        assert 0 < writes < BIG_RECORDS, f"{writes} of the big collection's writes queued"

        small_segment, small_id = vector_segment((DEFAULT_TENANT, DEFAULT_DATABASE, "small_l2"))
        assert not (path / small_segment / "index_metadata.pickle").exists()
        assert queued(small_id) > 0
    finally:
        con.close()


def test_import_succeeds(source, imported):
    path, reference = source
    _, result, before = imported
    assert result.returncode == 0, f"import failed:\n{result.stdout}\n{result.stderr}"
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) >= len(COLLECTIONS), result.stdout
    for _, _, name in COLLECTIONS:
        assert any(name in line for line in lines), f"no line for {name}:\n{result.stdout}"
    # The source is only read.
    after = tree_digest(path)
    changed = {f for f in before if after.get(f) != before[f]}
    added = {f for f in after if f not in before}
    assert not changed and not added, f"the import changed {sorted(changed)}, added {sorted(added)}"


def test_tenants_databases_and_collections(source, server):
    _, reference = source
    admin = server.admin()
    for tenant in reference["tenants"]:
        assert admin.get_tenant(tenant)["name"] == tenant
        dbs = sorted(d["name"] for d in admin.list_databases(tenant=tenant))
        assert dbs == reference["databases"][tenant], f"databases of {tenant}"
        for db in dbs:
            names = sorted(c.name for c in server.client(tenant, db).list_collections())
            assert names == reference["names"][(tenant, db)], f"collections of {tenant}/{db}"


@pytest.mark.parametrize("key", COLLECTIONS, ids=["/".join(k) for k in COLLECTIONS])
def test_collection_matches_chroma(source, server, key):
    _, reference = source
    tenant, db, name = key
    col = server.client(tenant, db).get_collection(name, embedding_function=None)
    compare_collection(col, reference["collections"][key], key)


def test_import_into_existing_collections_fails_and_changes_nothing(source, tmp_path):
    path, reference = source
    data = tmp_path / "data"
    first = run_import(path, data)
    assert first.returncode == 0, f"import failed:\n{first.stdout}\n{first.stderr}"
    before = data_digest(data)

    def assert_fails_unchanged(src):
        result = run_import(src, data)
        assert result.returncode != 0, f"an import into existing collections succeeded:\n{result.stdout}"
        message = result.stdout + result.stderr
        assert any(name in message for _, _, name in COLLECTIONS), (
            f"the error names no existing collection:\n{message}"
        )
        after = data_digest(data)
        changed = sorted(f for f in set(before) | set(after) if before.get(f) != after.get(f))
        assert not changed, f"the failed import of {src} changed {changed}"

    # The same directory again.
    assert_fails_unchanged(path)
    # A copy with a new tenant, databases and a collection besides the existing ones:
    # none of them may be created either.
    extended = tmp_path / "extended"
    shutil.copytree(path, extended)
    admin = chromadb.AdminClient(
        Settings(is_persistent=True, persist_directory=str(extended), anonymized_telemetry=False)
    )
    admin.create_tenant("tenant_three")
    admin.create_database("db_three", tenant="tenant_three")
    admin.create_database("db_extra", tenant=DEFAULT_TENANT)
    _persistent(extended, tenant="tenant_three", database="db_three").create_collection(
        "new_coll", embedding_function=None
    ).add(ids=["n1"], embeddings=[[1.0, 2.0]])
    admin.clear_system_cache()
    assert_fails_unchanged(extended)

    with ChromaServer(data, tmp_path / "server.log") as s:
        server_admin = s.admin()
        for tenant in reference["tenants"]:
            dbs = sorted(d["name"] for d in server_admin.list_databases(tenant=tenant))
            assert dbs == reference["databases"][tenant], f"databases of {tenant}"
        with pytest.raises(NotFoundError):
            server_admin.get_tenant("tenant_three")
        compare_all(s, reference)


def test_directory_without_chroma_sqlite3_fails(tmp_path):
    empty = tmp_path / "not-chroma"
    empty.mkdir()
    (empty / "README.txt").write_text("no chroma.sqlite3 here\n")
    result = run_import(empty, tmp_path / "data")
    assert result.returncode != 0, f"import succeeded:\n{result.stdout}"
    message = result.stdout + result.stderr
    assert "chroma.sqlite3" in message, f"unclear message:\n{message}"
