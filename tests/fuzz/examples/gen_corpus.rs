//! Writes the binary seeds of the committed corpora with the project's own encoders:
//! log batches, records files and HNSW indexes for `segment_decode`; manifests, API key
//! records, a wrapped data key and envelopes for `manifest_decode`. The JSON seeds of
//! `filter` and `request_bodies` are written by hand.
//!
//! ```sh
//! cargo run --manifest-path tests/fuzz/Cargo.toml --example gen_corpus
//! ```
//!
//! Keys, salts and nonces are random, so the encrypted seeds differ on every run. The
//! `index-*-v1.*`, `index-*-v3.*` and `index-*-v4.*` seeds of `segment_decode` were written
//! by the format 1, 3 and 4 writers, which the index no longer uses (it still reads them
//! all); this generator leaves them alone.

use std::fs;
use std::path::{Path, PathBuf};

use chroma_core::auth::api_keys::mint;
use chroma_core::catalog::{LogBatchRef, Manifest, RetiredObject, SegmentRef};
use chroma_core::crypto::envelope;
use chroma_core::crypto::KeyProvider;
use chroma_core::index::sparse::SparsePostings;
use chroma_core::index::{HnswIndex, HnswParams};
use chroma_core::model::sparse::SparseVector;
use chroma_core::model::{Metadata, MetadataValue, OpKind, Operation, Record, Space};
use chroma_core::segment::{decode_log_batch, decode_records, encode_log_batch, encode_records};
use chroma_fuzz::{as_index_body, as_index_head, context, data_key, key_provider, ENVELOPE_AAD};
use futures::executor::block_on;
use serde_json::json;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    segment_seeds(&root.join("segment_decode"));
    manifest_seeds(&root.join("manifest_decode"));
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::create_dir_all(dir).unwrap();
    let path: PathBuf = dir.join(name);
    fs::write(&path, bytes).unwrap();
    println!("{} ({} bytes)", path.display(), bytes.len());
}

fn segment_seeds(dir: &Path) {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../core/tests/golden");
    for name in ["log-v1.parquet", "records-v1.parquet"] {
        write(
            dir,
            &format!("golden-{name}"),
            &fs::read(golden.join(name)).unwrap(),
        );
    }

    let meta: Metadata = [
        ("a".to_string(), MetadataValue::Int(1)),
        ("s".to_string(), MetadataValue::StrArray(vec!["x".into()])),
    ]
    .into();
    let sparse = |indices: Vec<u32>, values: Vec<f32>| {
        Some(Metadata::from([(
            "s".to_string(),
            MetadataValue::SparseVector(SparseVector {
                indices,
                values,
                tokens: None,
            }),
        )]))
    };
    let rows = vec![
        sparse(vec![0, 2, 7], vec![0.5, 1.5, -1.0]),
        None,
        sparse(vec![1, 2], vec![2.0, 0.25]),
    ];
    write(
        dir,
        "sparse-postings",
        &SparsePostings::build(&rows).to_bytes(rows.len()),
    );

    let deletes = vec![Operation::delete("a"), Operation::delete("b")];
    let log = encode_log_batch(&deletes).unwrap();
    assert_eq!(decode_log_batch(&log).unwrap(), deletes);
    write(dir, "log-deletes.parquet", &log);
    let update = vec![Operation {
        kind: OpKind::Update,
        id: "x".into(),
        embedding: None,
        document: Some("new text".into()),
        uri: None,
        metadata: Some(
            [
                ("a".to_string(), None),
                ("b".to_string(), Some(MetadataValue::Bool(true))),
            ]
            .into(),
        ),
    }];
    write(
        dir,
        "log-update.parquet",
        &encode_log_batch(&update).unwrap(),
    );

    let records: Vec<Record> = (0..4)
        .map(|i| Record {
            id: format!("id{i}"),
            embedding: vec![i as f32, 1.0],
            document: (i % 2 == 0).then(|| format!("doc {i}")),
            uri: None,
            metadata: (i != 3).then(|| meta.clone()),
        })
        .collect();
    let rows: Vec<(u64, &Record)> = records
        .iter()
        .enumerate()
        .map(|(i, r)| (i as u64 * 3, r))
        .collect();
    let bytes = encode_records(&rows).unwrap();
    assert_eq!(decode_records(&bytes, true).unwrap().len(), 4);
    write(dir, "records-2d.parquet", &bytes);

    for (name, n, dim, space, m) in [
        ("index-l2", 24, 4, Space::L2, 4),
        ("index-cosine", 60, 3, Space::Cosine, 2),
        ("index-ip", 2, 2, Space::Ip, 16),
    ] {
        let vectors: Vec<f32> = (0..n * dim)
            .map(|i| ((i * 7919) % 101) as f32 / 50.0 - 1.0)
            .collect();
        let params = HnswParams {
            space,
            max_neighbors: m,
            ef_construction: 20,
        };
        let bytes = HnswIndex::build(&vectors, dim, &params).unwrap().to_bytes();
        assert_eq!(HnswIndex::from_bytes(&bytes).unwrap().len(), n);
        let body = &bytes[12..bytes.len() - 8];
        let version = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
        if version == 1 {
            assert_eq!(
                as_index_body(body),
                bytes,
                "the fuzz crate's checksum is the index's"
            );
        } else {
            let head_len = u64::from_le_bytes(bytes[40..48].try_into().unwrap()) as usize;
            assert_eq!(
                as_index_head(version, &bytes[12..head_len - 8]),
                bytes[..head_len],
                "the fuzz crate's head checksum is the index's"
            );
        }
        write(dir, &format!("{name}.hnsw"), &bytes);
        write(dir, &format!("{name}.body"), body);
    }
}

fn manifest_seeds(dir: &Path) {
    let (_, wrapped) = block_on(key_provider().generate_data_key(&context())).unwrap();
    write(dir, "wrapped-key.bin", &wrapped);
    write(
        dir,
        "manifest-new.json",
        &serde_json::to_vec_pretty(&Manifest::new(wrapped.clone())).unwrap(),
    );
    let mut m = Manifest::new(wrapped);
    m.version = 7;
    m.dimension = Some(384);
    m.next_seq = 4;
    m.next_offset = 30;
    m.total_ops = 30;
    m.indexed_ops = 20;
    m.log = vec![LogBatchRef {
        seq: 3,
        key: "tenants/t/collections/1/log/3".into(),
        ops: 10,
        bytes: 4096,
        first_offset: 20,
    }];
    m.segments = vec![SegmentRef {
        id: "01J0SEGMENT".into(),
        records_key: "tenants/t/collections/1/segments/a/records".into(),
        index_key: "tenants/t/collections/1/segments/a/index".into(),
        rows: 20,
        bytes: 65536,
        deletes_key: Some("tenants/t/collections/1/segments/a/deletes/2".into()),
        deleted: 2,
        records_len: Some(65_000),
        index_len: None,
        sparse_key: None,
    }];
    m.retired = vec![RetiredObject {
        key: "tenants/t/collections/1/log/2".into(),
        retired_at_ms: 1_700_000_000_000,
    }];
    write(
        dir,
        "manifest.json",
        &serde_json::to_vec_pretty(&m).unwrap(),
    );

    let key = mint(
        Some("reader".into()),
        vec!["acme/*/*:read".into(), "acme/db/docs:read,write".into()],
        Some(json!({"$and": [{"team": "a"}, {"level": {"$lte": 3}}]})),
        1_700_000_000_000,
        Some(1_800_000_000_000),
    );
    write(
        dir,
        "apikey.json",
        &serde_json::to_vec_pretty(&key.record).unwrap(),
    );
    let mut revoked = mint(None, vec!["*/*/*:admin".into()], None, 1, None).record;
    revoked.revoked_at_ms = Some(2);
    write(
        dir,
        "apikey-revoked.json",
        &serde_json::to_vec(&revoked).unwrap(),
    );

    let key = data_key();
    let text = b"a plaintext that spans several small chunks";
    let sealed = envelope::encrypt_with_chunk_size(&key, ENVELOPE_AAD, text, 16).unwrap();
    assert_eq!(
        envelope::decrypt(&key, ENVELOPE_AAD, &sealed).unwrap(),
        text
    );
    write(dir, "envelope-chunks.bin", &sealed);
    write(
        dir,
        "envelope-empty.bin",
        &envelope::encrypt(&key, ENVELOPE_AAD, b""),
    );
}
