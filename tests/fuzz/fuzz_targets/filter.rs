//! `where` / `where_document` filters: arbitrary bytes → JSON → `Filter::parse`.
//!
//! An object with a `where` or `where_document` key supplies those two clauses (as a
//! request body does); any other JSON value is taken as the `where` clause. Parsing may
//! fail, but must not panic, and nesting beyond `MAX_FILTER_DEPTH` must be an error, not
//! a stack overflow. A parsed filter is evaluated against fixed records two ways, row by
//! row (`Filter::matches`) and column-wise (`Filter::select`), which must agree.
#![no_main]

use chroma_core::model::filter::MAX_FILTER_DEPTH;
use chroma_core::model::packed::PackedStrings;
use chroma_core::model::{Filter, Metadata, MetadataColumns, Where, WhereDocument};
use chroma_core::ErrorCode;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(json) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let (where_, where_document) = match &json {
        Value::Object(o) if o.contains_key("where") || o.contains_key("where_document") => {
            (o.get("where"), o.get("where_document"))
        }
        other => (Some(other), None),
    };
    let filter = match Filter::parse(where_, where_document) {
        Ok(Some(f)) => f,
        Ok(None) => return,
        Err(e) => {
            assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e}");
            return;
        }
    };
    if let Some(w) = &filter.where_ {
        assert!(where_depth(w) <= MAX_FILTER_DEPTH, "{w:?}");
    }
    if let Some(d) = &filter.where_document {
        assert!(doc_depth(d) <= MAX_FILTER_DEPTH, "{d:?}");
    }

    let rows = chroma_fuzz::sample_rows();
    let metadatas: Vec<Option<Metadata>> = rows.iter().map(|(m, _)| m.clone()).collect();
    let documents = PackedStrings::pack(rows.iter().map(|(_, d)| d.as_deref()));
    let selected = filter.select(&MetadataColumns::build(&metadatas), &documents, &|_| None);
    for (i, (metadata, document)) in rows.iter().enumerate() {
        let one = filter.matches("", metadata.as_ref(), document.as_deref());
        assert_eq!(
            one,
            selected.contains(i),
            "row {i}: matches and select disagree on {filter:?}"
        );
    }
});

fn where_depth(w: &Where) -> usize {
    match w {
        Where::And(c) | Where::Or(c) => 1 + c.iter().map(where_depth).max().unwrap_or(0),
        Where::Metadata { .. } | Where::Id { .. } => 1,
        Where::Document(d) => doc_depth(d),
    }
}

fn doc_depth(d: &WhereDocument) -> usize {
    match d {
        WhereDocument::And(c) | WhereDocument::Or(c) => {
            1 + c.iter().map(doc_depth).max().unwrap_or(0)
        }
        _ => 1,
    }
}
