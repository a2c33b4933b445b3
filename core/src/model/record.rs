//! Records, their metadata values and the write operations that change them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::sparse::SparseVector;

/// A metadata value: a scalar, a non-empty homogeneous array of scalars, or a sparse
/// vector.
///
/// Serialized as plain JSON (`true`, `3`, `2.5`, `"x"`, `[1, 2]`); a sparse vector as its
/// tagged object (`{"#type": "sparse_vector", …}`, see [`super::sparse`]). Ints and floats
/// stay distinct on the wire (`1` vs `1.0`) but compare numerically in filters; a sparse
/// vector equals no scalar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MetadataValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    BoolArray(Vec<bool>),
    IntArray(Vec<i64>),
    FloatArray(Vec<f64>),
    StrArray(Vec<String>),
    SparseVector(SparseVector),
}

/// A record's metadata map.
pub type Metadata = BTreeMap<String, MetadataValue>;

/// Metadata as sent by update/upsert: `None` removes the key on merge.
pub type UpdateMetadata = BTreeMap<String, Option<MetadataValue>>;

/// A stored record as readers see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub id: String,
    pub embedding: Vec<f32>,
    pub document: Option<String>,
    pub uri: Option<String>,
    /// `None` when the record has no metadata (an empty map is stored as `None`).
    pub metadata: Option<Metadata>,
}

/// The kind of a logged write operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OpKind {
    /// Insert; ignored when the id already exists.
    Add,
    /// Insert, or merge into an existing record like `Update`.
    Upsert,
    /// Merge into an existing record; ignored when the id does not exist.
    Update,
    /// Remove the record.
    Delete,
}

impl OpKind {
    pub fn as_u8(self) -> u8 {
        match self {
            OpKind::Add => 0,
            OpKind::Upsert => 1,
            OpKind::Update => 2,
            OpKind::Delete => 3,
        }
    }

    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => OpKind::Add,
            1 => OpKind::Upsert,
            2 => OpKind::Update,
            3 => OpKind::Delete,
            _ => return None,
        })
    }
}

/// One validated write of one record, as stored in a log batch.
///
/// For `Update`/`Upsert` a `None` field keeps the old value, and metadata keys mapped to
/// `None` are removed. For `Add` the fields are the new record (metadata values are never
/// `None`). For `Delete` only `id` is meaningful.
#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    pub kind: OpKind,
    pub id: String,
    pub embedding: Option<Vec<f32>>,
    pub document: Option<String>,
    pub uri: Option<String>,
    pub metadata: Option<UpdateMetadata>,
}

impl Operation {
    pub fn delete(id: impl Into<String>) -> Self {
        Self {
            kind: OpKind::Delete,
            id: id.into(),
            embedding: None,
            document: None,
            uri: None,
            metadata: None,
        }
    }

    /// Applies this operation to the current state of its id, returning the new state.
    /// `None` means the record does not exist (never did, or was deleted).
    pub fn apply(&self, current: Option<Record>) -> Option<Record> {
        match (self.kind, current) {
            (OpKind::Delete, _) => None,
            (OpKind::Add, Some(existing)) => Some(existing),
            (OpKind::Update, None) => None,
            (OpKind::Add | OpKind::Upsert, None) => {
                let metadata = self.metadata.as_ref().and_then(|m| {
                    let map: Metadata = m
                        .iter()
                        .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
                        .collect();
                    (!map.is_empty()).then_some(map)
                });
                Some(Record {
                    id: self.id.clone(),
                    embedding: self.embedding.clone().unwrap_or_default(),
                    document: self.document.clone(),
                    uri: self.uri.clone(),
                    metadata,
                })
            }
            (OpKind::Update | OpKind::Upsert, Some(mut rec)) => {
                if let Some(e) = &self.embedding {
                    rec.embedding = e.clone();
                }
                if let Some(d) = &self.document {
                    rec.document = Some(d.clone());
                }
                if let Some(u) = &self.uri {
                    rec.uri = Some(u.clone());
                }
                if let Some(update) = &self.metadata {
                    let mut map = rec.metadata.take().unwrap_or_default();
                    for (k, v) in update {
                        match v {
                            Some(v) => {
                                map.insert(k.clone(), v.clone());
                            }
                            None => {
                                map.remove(k);
                            }
                        }
                    }
                    rec.metadata = (!map.is_empty()).then_some(map);
                }
                Some(rec)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(kind: OpKind, doc: Option<&str>, meta: &[(&str, Option<i64>)]) -> Operation {
        Operation {
            kind,
            id: "a".into(),
            embedding: Some(vec![1.0]),
            document: doc.map(String::from),
            uri: None,
            metadata: (!meta.is_empty()).then(|| {
                meta.iter()
                    .map(|(k, v)| (k.to_string(), v.map(MetadataValue::Int)))
                    .collect()
            }),
        }
    }

    #[test]
    fn add_of_existing_id_is_ignored() {
        let first = op(OpKind::Add, Some("one"), &[]).apply(None);
        let second = op(OpKind::Add, Some("two"), &[]).apply(first.clone());
        assert_eq!(first, second);
    }

    #[test]
    fn update_of_missing_id_is_ignored() {
        assert_eq!(op(OpKind::Update, Some("x"), &[]).apply(None), None);
    }

    #[test]
    fn upsert_merges_metadata_and_keeps_unset_fields() {
        let rec = op(OpKind::Add, Some("doc"), &[("x", Some(1)), ("y", Some(2))]).apply(None);
        let rec = op(OpKind::Upsert, None, &[("x", None), ("z", Some(3))])
            .apply(rec)
            .unwrap();
        assert_eq!(rec.document.as_deref(), Some("doc"));
        let meta = rec.metadata.unwrap();
        assert_eq!(meta.len(), 2);
        assert_eq!(meta["y"], MetadataValue::Int(2));
        assert_eq!(meta["z"], MetadataValue::Int(3));
    }

    #[test]
    fn removing_every_key_leaves_no_metadata() {
        let rec = op(OpKind::Add, None, &[("x", Some(1))]).apply(None);
        let rec = op(OpKind::Update, None, &[("x", None)]).apply(rec).unwrap();
        assert_eq!(rec.metadata, None);
    }

    #[test]
    fn delete_removes() {
        let rec = op(OpKind::Add, None, &[]).apply(None);
        assert_eq!(Operation::delete("a").apply(rec), None);
    }
}
