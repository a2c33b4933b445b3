//! HTTP request bodies: arbitrary bytes through the API's JSON body parser
//! (`api::extract::parse_json`) as every record, collection, tenant, database and key
//! payload, then through the checks the handlers run on a parsed body (write batch
//! validation, filter parsing, embedding/id checks, collection metadata and HNSW
//! configuration, grants).
//!
//! Errors are fine; a parse error must be a 400 or 422. Panics are not. A write batch
//! that validation accepts must also be encodable as a log batch and decode back to the
//! same operations: otherwise the API would accept a write and then fail storing it.
#![no_main]

use chroma_core::api::extract::parse_json;
use chroma_core::api::api_keys::CreateKeyPayload;
use chroma_core::auth::delegation::KeyRequest;
use chroma_core::auth::rows::RowFilter;
use chroma_core::auth::Principal;
use chroma_core::api::types::{
    include_of, AddCollectionRecordsPayload, CreateCollectionPayload, CreateDatabasePayload,
    CreateTenantPayload, DeleteCollectionRecordsPayload, GetRequestPayload, QueryRequestPayload,
    UpdateCollectionPayload, UpdateCollectionRecordsPayload, UpsertCollectionRecordsPayload,
};
use chroma_core::model::validate::{
    self, collection_metadata_from_json, hnsw_configuration_from_json, hnsw_update_from_json,
    MAX_HNSW_EF, MAX_HNSW_NEIGHBORS,
};
use chroma_core::model::{Filter, HnswConfiguration, Metadata, OpKind, UpdateMetadata, WriteBatch};
use chroma_core::segment::{decode_log_batch, encode_log_batch};
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde_json::json;

fuzz_target!(|data: &[u8]| {
    if let Some(b) = parse::<AddCollectionRecordsPayload>(data) {
        // As the add handler: an empty metadata map is no metadata.
        let metadatas = b.metadatas.map(|list| {
            list.into_iter()
                .map(|m| {
                    m.filter(|m| !m.is_empty())
                        .map(|m| m.into_iter().map(|(k, v)| (k, Some(v))).collect())
                })
                .collect()
        });
        let batch = WriteBatch {
            ids: b.ids,
            embeddings: Some(b.embeddings.0),
            documents: b.documents,
            uris: b.uris,
            metadatas,
        };
        write(batch, OpKind::Add);
    }
    if let Some(b) = parse::<UpsertCollectionRecordsPayload>(data) {
        let batch = WriteBatch {
            ids: b.ids,
            embeddings: Some(b.embeddings.0),
            documents: b.documents,
            uris: b.uris,
            metadatas: merge_metadatas(b.metadatas),
        };
        write(batch, OpKind::Upsert);
    }
    if let Some(b) = parse::<UpdateCollectionRecordsPayload>(data) {
        let batch = WriteBatch {
            ids: b.ids,
            embeddings: b.embeddings.map(|e| e.0),
            documents: b.documents,
            uris: b.uris,
            metadatas: merge_metadatas(b.metadatas),
        };
        write(batch, OpKind::Update);
    }
    if let Some(b) = parse::<DeleteCollectionRecordsPayload>(data) {
        let _ = Filter::parse(b.where_.as_ref(), b.where_document.as_ref());
        for id in b.ids.iter().flatten() {
            let _ = validate::validate_id(id);
        }
    }
    if let Some(b) = parse::<GetRequestPayload>(data) {
        let _ = Filter::parse(b.where_.as_ref(), b.where_document.as_ref());
        include_of(&b.include.unwrap_or_default());
    }
    if let Some(b) = parse::<QueryRequestPayload>(data) {
        let _ = Filter::parse(b.where_.as_ref(), b.where_document.as_ref());
        for e in &b.query_embeddings {
            let _ = validate::validate_embedding(e);
        }
        for id in b.ids.iter().flatten() {
            let _ = validate::validate_id(id);
        }
    }
    if let Some(b) = parse::<CreateCollectionPayload>(data) {
        let _ = validate::validate_collection_name(&b.name);
        if let Ok(metadata) = collection_metadata(b.metadata) {
            let hnsw = b
                .configuration
                .and_then(|c| c.hnsw)
                .map(|h| json!({ "hnsw": h }));
            if let Ok(cfg) = hnsw_configuration_from_json(hnsw.as_ref(), metadata.as_ref()) {
                check_hnsw(&cfg);
            }
        }
    }
    if let Some(b) = parse::<UpdateCollectionPayload>(data) {
        if let Some(name) = &b.new_name {
            let _ = validate::validate_collection_name(name);
        }
        let _ = collection_metadata(b.new_metadata);
        if let Some(h) = b.new_configuration.and_then(|c| c.hnsw) {
            let current = HnswConfiguration::default();
            if let Ok(cfg) = hnsw_update_from_json(&json!({ "hnsw": h }), &current) {
                check_hnsw(&cfg);
            }
        }
    }
    if let Some(b) = parse::<CreateTenantPayload>(data) {
        let _ = validate::validate_tenant_name(&b.name);
    }
    if let Some(b) = parse::<CreateDatabasePayload>(data) {
        let _ = validate::validate_database_name(&b.name);
    }
    if let Some(b) = parse::<CreateKeyPayload>(data) {
        // Minted by the operator and by a row-limited admin: the rules never panic, and
        // a key minted by the latter is never wider in rows than its minter.
        let request = KeyRequest {
            grants: b.grants,
            name: b.name,
            row_filter: b.row_filter,
            expires_at_ms: b.expires_at_ms,
        };
        let _ = Principal::local().mint_key(request.clone(), 1);
        let limited = Principal {
            id: "key:fuzz".into(),
            grants: Principal::local().grants,
            row_filter: Some(RowFilter::parse(&json!({"owner": "a"})).expect("valid filter")),
        };
        if let Ok(k) = limited.mint_key(request, 1) {
            let own = limited.row_filter.as_ref().expect("set above");
            let theirs = k.record.row_filter.as_ref().expect("a limited minter's key has a filter");
            assert!(own.is_narrowed_by(theirs), "{theirs}");
        }
    }
});

/// The body as `T`, or `None` after checking the error's status.
fn parse<T: DeserializeOwned>(data: &[u8]) -> Option<T> {
    match parse_json::<T>(data) {
        Ok(v) => Some(v),
        Err(e) => {
            let status = e.status.as_u16();
            assert!(status == 400 || status == 422, "{status}: {}", e.message);
            None
        }
    }
}

/// As the update and upsert handlers: an empty metadata map changes nothing.
fn merge_metadatas(m: Option<Vec<Option<UpdateMetadata>>>) -> Option<Vec<Option<UpdateMetadata>>> {
    m.map(|list| {
        list.into_iter()
            .map(|m| m.filter(|m| !m.is_empty()))
            .collect()
    })
}

/// As the collection handlers: through JSON and the model's validation.
fn collection_metadata(m: Option<Metadata>) -> chroma_core::Result<Option<Metadata>> {
    match m {
        None => Ok(None),
        Some(m) => match serde_json::to_value(m) {
            Ok(v) => collection_metadata_from_json(&v),
            Err(_) => Ok(None),
        },
    }
}

/// Validates a write batch; an accepted one must round-trip through the log format.
fn write(batch: WriteBatch, kind: OpKind) {
    let ids = batch.ids.clone();
    let Ok((ops, dim)) = batch.into_operations(kind) else {
        return;
    };
    assert_eq!(ops.len(), ids.len());
    for (op, id) in ops.iter().zip(&ids) {
        assert_eq!(&op.id, id);
        assert_eq!(op.kind, kind);
        if let Some(e) = &op.embedding {
            assert_eq!(Some(e.len()), dim, "embedding of {id:?}");
        }
    }
    let bytes = encode_log_batch(&ops)
        .unwrap_or_else(|e| panic!("a validated {kind:?} batch does not encode: {e}"));
    let back = decode_log_batch(&bytes)
        .unwrap_or_else(|e| panic!("an encoded {kind:?} batch does not decode: {e}"));
    assert_eq!(back, ops, "log batch round trip");
}

/// An accepted configuration is one the index builder takes.
fn check_hnsw(cfg: &HnswConfiguration) {
    assert!(
        (1..=MAX_HNSW_NEIGHBORS).contains(&cfg.max_neighbors),
        "{cfg:?}"
    );
    assert!((1..=MAX_HNSW_EF).contains(&cfg.ef_construction), "{cfg:?}");
    assert!((1..=MAX_HNSW_EF).contains(&cfg.ef_search), "{cfg:?}");
    assert!(cfg.resize_factor.is_finite(), "{cfg:?}");
}
