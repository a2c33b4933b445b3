// The official JavaScript client (`chromadb` on npm, 3.x) against `chroma run`, unchanged:
// collections, add / upsert / update / get / query / delete with filters, search with the
// client's builders, errors, and an authenticated server reached with the client's header
// option. Each server is the
// binary in $CHROMA_BIN (default target/debug/chroma) on a fresh data directory and a
// free port, stopped with SIGTERM at the end. Run by scripts/test.sh (`npm test` here).

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { ChromaClient, K, Knn, Rrf, Search } from "chromadb";

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const BIN = process.env.CHROMA_BIN || join(REPO, "target", "debug", "chroma");
const MASTER_KEY = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const LISTENING = /listening on https?:\/\/([0-9.]+):(\d+)/;

function serverEnv() {
  const env = { ...process.env, CHROMA_MASTER_KEY: MASTER_KEY, RUST_LOG: "warn" };
  for (const name of ["CHROMA_HOST", "CHROMA_PORT", "CHROMA_PATH", "CHROMA_BACKEND"]) {
    delete env[name];
  }
  return env;
}

/** `chroma run` on `dir` with `args`; resolves once it prints its port. */
function startServer(dir, args = []) {
  return new Promise((resolvePort, reject) => {
    const proc = spawn(BIN, ["run", "--path", dir, "--port", "0", "--allow-reset", ...args], {
      env: serverEnv(),
      stdio: ["ignore", "pipe", "inherit"],
    });
    let out = "";
    const timer = setTimeout(() => {
      proc.kill("SIGKILL");
      reject(new Error("chroma did not start within 60 s"));
    }, 60_000);
    proc.stdout.on("data", (chunk) => {
      out += chunk;
      const m = LISTENING.exec(out);
      if (m) {
        clearTimeout(timer);
        resolvePort({ proc, port: Number(m[2]) });
      }
    });
    proc.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`chroma exited with ${code} before listening`));
    });
  });
}

/** SIGTERM, then the exit code (a graceful stop is 0). */
function stopServer({ proc }) {
  return new Promise((resolveCode) => {
    if (proc.exitCode !== null) {
      resolveCode(proc.exitCode);
      return;
    }
    proc.removeAllListeners("exit");
    proc.on("exit", (code) => resolveCode(code));
    proc.kill("SIGTERM");
  });
}

describe("an open server", () => {
  let dir;
  let server;
  let client;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "chroma-js-"));
    server = await startServer(join(dir, "data"));
    client = new ChromaClient({ host: "127.0.0.1", port: server.port });
  });

  after(async () => {
    assert.equal(await stopServer(server), 0, "SIGTERM stops the server cleanly");
    rmSync(dir, { recursive: true, force: true });
  });

  test("heartbeat and version", async () => {
    assert.ok((await client.heartbeat()) > 0);
    assert.match(await client.version(), /^\d+\.\d+\.\d+/);
  });

  test("collections: create, get or create, list, count, modify, delete", async () => {
    await client.reset();
    const c = await client.createCollection({
      name: "js-books",
      metadata: { owner: "js" },
      embeddingFunction: null,
    });
    assert.equal(c.name, "js-books");
    assert.deepEqual(c.metadata, { owner: "js" });
    const again = await client.getOrCreateCollection({ name: "js-books", embeddingFunction: null });
    assert.equal(again.id, c.id);
    await assert.rejects(
      client.createCollection({ name: "js-books", embeddingFunction: null }),
      /already exists/,
    );
    await client.createCollection({ name: "js-other", embeddingFunction: null });
    const names = (await client.listCollections()).map((x) => x.name).sort();
    assert.deepEqual(names, ["js-books", "js-other"]);
    assert.equal(await client.countCollections(), 2);
    await c.modify({ name: "js-renamed", metadata: { owner: "js", v: 2 } });
    const renamed = await client.getCollection({ name: "js-renamed", embeddingFunction: null });
    assert.equal(renamed.id, c.id);
    assert.deepEqual(renamed.metadata, { owner: "js", v: 2 });
    await client.deleteCollection({ name: "js-other" });
    await assert.rejects(
      client.getCollection({ name: "js-other", embeddingFunction: null }),
      (e) => e.name === "ChromaNotFoundError",
    );
  });

  test("records: add, get, query with filters, upsert, update, delete", async () => {
    await client.reset();
    const c = await client.createCollection({
      name: "js-records",
      configuration: { hnsw: { space: "l2" } },
      embeddingFunction: null,
    });
    await c.add({
      ids: ["a", "b", "c", "d"],
      embeddings: [
        [0, 0],
        [1, 0],
        [2, 0],
        [3, 0],
      ],
      documents: ["apple pie", "banana split", "cherry pie", "date loaf"],
      metadatas: [
        { kind: "pie", n: 1 },
        { kind: "split", n: 2 },
        { kind: "pie", n: 3 },
        { kind: "loaf", n: 4, tags: ["x", "y"] },
      ],
    });
    assert.equal(await c.count(), 4);

    const byId = await c.get({ ids: ["c", "a"], include: ["documents", "metadatas"] });
    assert.deepEqual(byId.ids, ["a", "c"]);
    assert.deepEqual(byId.documents, ["apple pie", "cherry pie"]);

    const pies = await c.get({
      where: { $and: [{ kind: "pie" }, { n: { $gte: 2 } }] },
      include: ["metadatas"],
    });
    assert.deepEqual(pies.ids, ["c"]);
    assert.deepEqual(pies.metadatas, [{ kind: "pie", n: 3 }]);
    const tagged = await c.get({ where: { tags: { $contains: "y" } } });
    assert.deepEqual(tagged.ids, ["d"]);
    const split = await c.get({ whereDocument: { $contains: "split" } });
    assert.deepEqual(split.ids, ["b"]);

    const near = await c.query({
      queryEmbeddings: [[2.9, 0]],
      nResults: 2,
      include: ["distances", "documents"],
    });
    assert.deepEqual(near.ids, [["d", "c"]]);
    assert.ok(Math.abs(near.distances[0][0] - 0.01) < 1e-5, `${near.distances}`);
    const nearPie = await c.query({
      queryEmbeddings: [[2.9, 0]],
      nResults: 3,
      where: { kind: { $in: ["pie", "split"] } },
      whereDocument: { $not_contains: "banana" },
    });
    assert.deepEqual(nearPie.ids, [["c", "a"]]);

    await c.upsert({
      ids: ["a", "e"],
      embeddings: [
        [0, 1],
        [4, 0],
      ],
      metadatas: [{ kind: "tart", n: 1 }, { kind: "pie", n: 5 }],
    });
    // (The client embeds documents itself unless embeddings come with them.)
    await c.update({
      ids: ["b"],
      embeddings: [[1, 0.5]],
      documents: ["banana bread"],
      metadatas: [{ kind: "bread" }],
    });
    assert.equal(await c.count(), 5);
    const changed = await c.get({ ids: ["a", "b", "e"], include: ["metadatas", "documents", "embeddings"] });
    assert.deepEqual(changed.metadatas, [
      { kind: "tart", n: 1 },
      { kind: "bread", n: 2 },
      { kind: "pie", n: 5 },
    ]);
    assert.equal(changed.documents[1], "banana bread");
    assert.deepEqual(changed.embeddings[0], [0, 1]);

    await c.delete({ ids: ["e"] });
    await c.delete({ where: { kind: "bread" } });
    assert.deepEqual((await c.get()).ids.sort(), ["a", "c", "d"]);
  });

  test("search with the client's builders", async () => {
    await client.reset();
    const c = await client.createCollection({ name: "js-search", embeddingFunction: null });
    await c.add({
      ids: ["a", "b", "c", "d"],
      embeddings: [
        [0, 0],
        [1, 0],
        [2, 0],
        [3, 0],
      ],
      documents: ["alpha", "beta", "gamma", "delta"],
      metadatas: [{ g: 1 }, { g: 2 }, { g: 1 }, { g: 2 }],
    });
    const result = await c.search(
      new Search()
        .where(K("g").eq(1).and(K.ID.notIn(["a"])))
        .rank(Knn({ query: [0, 0], limit: 3 }))
        .limit(5)
        .select(K.DOCUMENT, K.SCORE),
    );
    assert.deepEqual(result.ids, [["c"]]);
    const [row] = result.rows()[0];
    assert.equal(row.document, "gamma");
    assert.equal(row.score, 4);
    // Reciprocal rank fusion of two dense rankings, each with a default rank.
    const fused = await c.search(
      new Search()
        .rank(
          Rrf({
            ranks: [
              Knn({ query: [0, 0], limit: 2, returnRank: true, default: 10 }),
              Knn({ query: [3, 0], limit: 2, returnRank: true, default: 10 }),
            ],
          }),
        )
        .select(K.SCORE),
    );
    // a and d are first in one ranking each; b and c second.
    assert.deepEqual(fused.ids[0].slice(0, 2).sort(), ["a", "d"]);
    assert.equal(fused.ids[0].length, 4);
  });

  test("bad input is refused with Chroma's errors and writes nothing", async () => {
    await client.reset();
    const c = await client.createCollection({ name: "js-errors", embeddingFunction: null });
    await c.add({ ids: ["a"], embeddings: [[1, 2, 3]] });
    await assert.rejects(
      c.add({ ids: ["b"], embeddings: [[1, 2]] }),
      /dimension/,
    );
    await assert.rejects(
      c.query({ queryEmbeddings: [[1, 2]], nResults: 1 }),
      /dimension of 3, got 2/,
    );
    // A key starting with '#' passes the client's checks and is refused by the server.
    await assert.rejects(c.get({ where: { "#bogus": 1 } }), /reserved|#bogus/);
    assert.equal(await c.count(), 1);
  });
});

describe("an authenticated server", () => {
  let dir;
  let server;
  let key;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "chroma-js-auth-"));
    const data = join(dir, "data");
    key = execFileSync(
      BIN,
      ["keys", "create", "--path", data, "--grant", "*/*/*:read,write,admin"],
      { env: serverEnv(), encoding: "utf8" },
    )
      .trim()
      .split("\n")
      .pop();
    server = await startServer(data, ["--auth"]);
  });

  after(async () => {
    assert.equal(await stopServer(server), 0);
    rmSync(dir, { recursive: true, force: true });
  });

  test("requests without the key are refused; with it they pass", async () => {
    const anonymous = new ChromaClient({ host: "127.0.0.1", port: server.port });
    await assert.rejects(anonymous.listCollections());
    for (const headers of [{ "x-chroma-token": key }, { Authorization: `Bearer ${key}` }]) {
      const client = new ChromaClient({ host: "127.0.0.1", port: server.port, headers });
      const c = await client.getOrCreateCollection({ name: "js-auth", embeddingFunction: null });
      await c.upsert({ ids: ["a"], embeddings: [[1, 2]] });
      assert.equal(await c.count(), 1);
    }
  });
});
