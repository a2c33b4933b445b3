//! Crash safety: a writer process is killed (SIGKILL) at random points while it ingests
//! and compacts in the background; after each kill the directory is reopened and must
//! hold every acknowledged record, no partial batch, and stay writable and compactable.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chroma_core::engine::{DeleteRequest, EngineConfig, GetRequest, Include, Merge};
use chroma_core::model::validate::WriteBatch;
use chroma_core::model::CollectionConfiguration;
use chroma_core::model::IfExists;
use rand::Rng;

use crate::common;

const BATCH: u64 = 40;
const DIM: usize = 8;

fn embedding(n: u64) -> Vec<f32> {
    (0..DIM)
        .map(|i| ((n * 31 + i as u64 * 7) % 97) as f32 / 97.0)
        .collect()
}

fn child_config() -> EngineConfig {
    EngineConfig {
        compact_log_ops: 120,
        // Compact as soon as asked, so kills land during compactions too.
        compact_quiet: Duration::ZERO,
        optimize_after_idle: Duration::from_millis(50),
        // Long enough for a write to commit the object it just put.
        gc_grace: Duration::from_secs(5),
        rows_per_partition: 16,
        ..EngineConfig::default()
    }
}

/// The writer: adds batches of records forever, deleting an older record now and then,
/// printing an acknowledgement line after each write returns.
#[test]
#[ignore = "run as a child process by crash_safety"]
fn crash_child() {
    let Ok(dir) = std::env::var("CHROMA_CRASH_DIR") else {
        return;
    };
    let start: u64 = std::env::var("CHROMA_CRASH_START")
        .unwrap()
        .parse()
        .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let opened = common::open(Path::new(&dir), child_config());
        let _background = opened.engine.spawn_background(opened.requests);
        let engine = opened.engine;
        let c = engine
            .create_collection(
                "default_tenant",
                "default_database",
                "crash",
                None,
                CollectionConfiguration::default(),
                IfExists::Get,
            )
            .await
            .unwrap();
        let mut n = start;
        loop {
            let ids: Vec<String> = (n..n + BATCH).map(|i| format!("r{i}")).collect();
            let batch = WriteBatch {
                ids,
                embeddings: Some((n..n + BATCH).map(|i| Some(embedding(i))).collect()),
                documents: Some((n..n + BATCH).map(|i| Some(format!("doc {i}"))).collect()),
                uris: None,
                metadatas: None,
            };
            engine.add(&c, batch).await.unwrap();
            println!("ack add {n}");
            if n.is_multiple_of(BATCH * 3) && n > 0 {
                let victim = n / 2;
                engine
                    .delete(
                        &c,
                        DeleteRequest {
                            ids: Some(vec![format!("r{victim}")]),
                            ..Default::default()
                        },
                    )
                    .await
                    .unwrap();
                println!("ack del {victim}");
            }
            n += BATCH;
        }
    });
}

#[test]
fn crash_safety() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::thread_rng();
    let mut acked_adds: BTreeSet<u64> = BTreeSet::new();
    let mut acked_deletes: BTreeSet<u64> = BTreeSet::new();
    let mut next: u64 = 0;
    for round in 0..8 {
        let mut child = Command::new(&exe)
            .args([
                "crash::crash_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("CHROMA_CRASH_DIR", dir.path())
            .env("CHROMA_CRASH_START", next.to_string())
            .env("RUST_LOG", "off")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let kill_after = Duration::from_millis(rng.gen_range(150..1500));
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let started = Instant::now();
        let mut lines = Vec::new();
        while started.elapsed() < kill_after {
            if let Ok(line) = rx.recv_timeout(Duration::from_millis(10)) {
                lines.push(line);
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        lines.extend(rx.try_iter());
        let mut in_flight = next;
        // A deletion the writer may have been doing when killed.
        let mut pending_delete = None;
        // libtest may print its own "test ... " prefix on the first line.
        for line in lines
            .iter()
            .filter_map(|l| l.find("ack ").map(|i| &l[i + 4..]))
        {
            let (what, n) = line.split_once(' ').unwrap();
            let n: u64 = n.parse().unwrap();
            match what {
                "add" => {
                    acked_adds.insert(n);
                    in_flight = n + BATCH;
                    pending_delete = (n.is_multiple_of(BATCH * 3) && n > 0).then_some(n / 2);
                }
                "del" => {
                    acked_deletes.insert(n);
                    pending_delete = None;
                }
                other => panic!("unexpected line {other}"),
            }
        }
        let outcome = verify(
            dir.path(),
            &acked_adds,
            &acked_deletes,
            in_flight,
            pending_delete,
            round,
        );
        // What the writer did without acknowledging it is now durable history too.
        if outcome.in_flight_present {
            acked_adds.insert(in_flight);
        }
        if let (Some(victim), true) = (pending_delete, outcome.pending_deleted) {
            acked_deletes.insert(victim);
        }
        next = in_flight + BATCH;
    }
    assert!(
        acked_adds.len() > 8,
        "the writer acknowledged too little to test anything"
    );
}

struct Outcome {
    in_flight_present: bool,
    pending_deleted: bool,
}

/// Reopens the directory and checks it against what was acknowledged.
fn verify(
    dir: &Path,
    acked_adds: &BTreeSet<u64>,
    acked_deletes: &BTreeSet<u64>,
    in_flight: u64,
    pending_delete: Option<u64>,
    round: usize,
) -> Outcome {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let opened = common::open(dir, common::manual_config());
        let engine = opened.engine;
        let c = match engine
            .get_collection("default_tenant", "default_database", "crash")
            .await
        {
            Ok(c) => c,
            Err(_) => {
                assert!(
                    acked_adds.is_empty(),
                    "round {round}: acknowledged writes but no collection"
                );
                return Outcome {
                    in_flight_present: false,
                    pending_deleted: false,
                };
            }
        };
        let got = engine
            .get(
                &c,
                GetRequest {
                    include: Include::all(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let present: BTreeSet<u64> = got.ids.iter().map(|id| id[1..].parse().unwrap()).collect();
        for (i, id) in got.ids.iter().enumerate() {
            let n: u64 = id[1..].parse().unwrap();
            assert_eq!(
                got.embeddings.as_ref().unwrap()[i],
                embedding(n),
                "round {round}: {id}"
            );
            assert_eq!(
                got.documents.as_ref().unwrap()[i].as_deref(),
                Some(format!("doc {n}").as_str())
            );
        }
        // Every acknowledged record is there unless its deletion was acknowledged.
        for &first in acked_adds {
            for n in first..first + BATCH {
                if !acked_deletes.contains(&n) && pending_delete != Some(n) {
                    assert!(
                        present.contains(&n),
                        "round {round}: acknowledged r{n} lost"
                    );
                }
            }
        }
        for n in acked_deletes {
            assert!(
                !present.contains(n),
                "round {round}: acknowledged deletion of r{n} undone"
            );
        }
        // The batch in flight is all there or not at all; nothing else exists.
        let in_flight_rows: Vec<u64> = (in_flight..in_flight + BATCH).collect();
        let seen = in_flight_rows
            .iter()
            .filter(|n| present.contains(n))
            .count();
        assert!(
            seen == 0 || seen == BATCH as usize,
            "round {round}: partial batch ({seen} rows)"
        );
        for n in &present {
            let acked = acked_adds.iter().any(|&f| (f..f + BATCH).contains(n));
            assert!(
                acked || (in_flight..in_flight + BATCH).contains(n),
                "round {round}: r{n} came from nowhere"
            );
        }
        // The collection still compacts and reads the same afterwards.
        engine.compact(c.id, Merge::All).await.unwrap();
        let after = engine.get(&c, GetRequest::default()).await.unwrap();
        assert_eq!(
            after.ids, got.ids,
            "round {round}: compaction changed the contents"
        );
        // Objects left by the killed writer are collected.
        engine.collect_garbage(c.id).await.unwrap();
        let after_gc = engine.count(&c).await.unwrap();
        assert_eq!(after_gc, got.ids.len() as u64);
        Outcome {
            in_flight_present: seen == BATCH as usize,
            pending_deleted: pending_delete.is_some_and(|v| !present.contains(&v)),
        }
    })
}
