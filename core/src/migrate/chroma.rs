//! A Chroma 1.x persist directory (what `chromadb.PersistentClient(path=DIR)` writes),
//! read directly: no Chroma needed.
//!
//! `chroma.sqlite3` holds the catalog (`tenants`, `databases`, `collections` with
//! `config_json_str` and `schema_str`, `collection_metadata`), each collection's
//! segments (`segments`: one `METADATA` segment in SQLite, one `VECTOR` segment in a
//! directory named by its id beside the database), the metadata segment's records
//! (`embeddings` → `embedding_metadata` and `embedding_metadata_array`, the document
//! and URI under the keys `chroma:document` and `chroma:uri`), the write-ahead queue
//! (`embeddings_queue`: every operation with its vector, in `seq_id` order, purged once
//! every segment has persisted it) and how far each segment got (`max_seq_id`).
//!
//! A collection's records are the metadata segment's, then the queue's operations past
//! its `max_seq_id`; their vectors are those of the HNSW files ([`super::hnsw_files`],
//! once Chroma has persisted any), then the queue's past the vector segment's
//! `max_seq_id`; every record reads back as Chroma answers it (the vectors of a cosine
//! collection at their original length, as Chroma keeps them).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::hnsw_files;
use crate::error::{Error, Result};
use crate::model::{Metadata, MetadataValue};

const DOCUMENT_KEY: &str = "chroma:document";
const URI_KEY: &str = "chroma:uri";

/// An open persist directory.
pub struct ChromaDir {
    path: PathBuf,
    conn: Connection,
}

/// A collection of the directory.
#[derive(Debug, Clone)]
pub struct ChromaCollection {
    pub id: String,
    pub tenant: String,
    pub database: String,
    pub name: String,
    pub dimension: Option<u32>,
    pub metadata: Option<Metadata>,
    /// `config_json_str` (`{}` when absent): the client's configuration JSON.
    pub configuration: serde_json::Value,
    /// `schema_str`, when Chroma stored one (1.1 and later).
    pub schema: Option<serde_json::Value>,
    metadata_segment: Option<String>,
    vector_segment: Option<String>,
}

/// A record as Chroma answers it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChromaRecord {
    pub id: String,
    pub embedding: Vec<f32>,
    pub document: Option<String>,
    pub uri: Option<String>,
    pub metadata: Option<Metadata>,
}

#[derive(Debug, Clone, Default)]
struct Fields {
    document: Option<String>,
    uri: Option<String>,
    metadata: Metadata,
}

/// Receives (record id, key, value) rows of a metadata table.
type MetadataSink<'a> = dyn FnMut(&str, String, MetadataValue) -> Result<()> + 'a;

/// One operation of the queue.
struct QueuedOp {
    kind: OpKind,
    id: String,
    vector: Option<Vec<f32>>,
    /// Keys set (`Some`) or removed (`None`), the document and URI among them.
    metadata: Vec<(String, Option<MetadataValue>)>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum OpKind {
    Add,
    Update,
    Upsert,
    Delete,
}

fn sql(e: rusqlite::Error) -> Error {
    Error::invalid(format!("cannot read Chroma's chroma.sqlite3: {e}"))
}

impl ChromaDir {
    /// Opens `path` read-only; fails with a message naming it when it holds no Chroma
    /// database.
    pub fn open(path: &Path) -> Result<Self> {
        let file = path.join("chroma.sqlite3");
        if !file.is_file() {
            return Err(Error::invalid(format!(
                "{} is not a Chroma persist directory: it has no chroma.sqlite3",
                path.display()
            )));
        }
        let conn = Connection::open_with_flags(
            &file,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sql)?;
        Ok(Self {
            path: path.to_owned(),
            conn,
        })
    }

    /// Every (tenant, database), tenants first even when they have no database.
    pub fn databases(&self) -> Result<Vec<(String, Option<String>)>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT t.id, d.name FROM tenants t LEFT JOIN databases d ON d.tenant_id = t.id
                 ORDER BY t.rowid, d.rowid",
            )
            .map_err(sql)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(sql)?;
        rows.collect::<rusqlite::Result<_>>().map_err(sql)
    }

    /// Every collection, in creation order.
    pub fn collections(&self) -> Result<Vec<ChromaCollection>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT c.id, d.tenant_id, d.name, c.name, c.dimension, c.config_json_str,
                        c.schema_str
                 FROM collections c JOIN databases d ON d.id = c.database_id
                 ORDER BY c.rowid",
            )
            .map_err(sql)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                    r.get::<_, Option<String>>(5)?,
                    r.get::<_, Option<String>>(6)?,
                ))
            })
            .map_err(sql)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(sql)?;
        let mut out = Vec::with_capacity(rows.len());
        for (id, tenant, database, name, dimension, config, schema) in rows {
            let json = |what: &str, text: Option<String>| -> Result<Option<serde_json::Value>> {
                text.filter(|t| !t.trim().is_empty())
                    .map(|t| {
                        serde_json::from_str(&t).map_err(|e| {
                            Error::invalid(format!(
                                "collection {name}: its {what} is not JSON: {e}"
                            ))
                        })
                    })
                    .transpose()
            };
            let metadata = self.collection_metadata(&id)?;
            let (metadata_segment, vector_segment) = self.segments(&id)?;
            out.push(ChromaCollection {
                dimension: dimension
                    .map(|d| u32::try_from(d).map_err(|_| Error::invalid("collection dimension")))
                    .transpose()?,
                configuration: json("configuration", config)?.unwrap_or(serde_json::json!({})),
                schema: json("schema", schema)?,
                metadata,
                metadata_segment,
                vector_segment,
                id,
                tenant,
                database,
                name,
            });
        }
        Ok(out)
    }

    fn collection_metadata(&self, id: &str) -> Result<Option<Metadata>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT key, str_value, int_value, float_value, bool_value
                 FROM collection_metadata WHERE collection_id = ?1",
            )
            .map_err(sql)?;
        let rows = stmt
            .query_map([id], |r| Ok((r.get::<_, String>(0)?, typed(r, 1)?)))
            .map_err(sql)?;
        let mut metadata = Metadata::new();
        for row in rows {
            let (key, value) = row.map_err(sql)?;
            if let Some(v) = value {
                metadata.insert(key, v);
            }
        }
        Ok((!metadata.is_empty()).then_some(metadata))
    }

    /// The collection's (metadata segment, vector segment).
    fn segments(&self, id: &str) -> Result<(Option<String>, Option<String>)> {
        let one = |scope: &str| {
            self.conn
                .query_row(
                    "SELECT id FROM segments WHERE collection = ?1 AND scope = ?2",
                    [id, scope],
                    |r| r.get::<_, String>(0),
                )
                .optional()
                .map_err(sql)
        };
        Ok((one("METADATA")?, one("VECTOR")?))
    }

    /// How far `segment` got: the last queue operation it holds (0: none).
    fn max_seq_id(&self, segment: &str) -> Result<i64> {
        let value: Option<rusqlite::types::Value> = self
            .conn
            .query_row(
                "SELECT seq_id FROM max_seq_id WHERE segment_id = ?1",
                [segment],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql)?;
        Ok(match value {
            Some(rusqlite::types::Value::Integer(i)) => i,
            // Older Chroma stored sequence ids as 8 big-endian bytes.
            Some(rusqlite::types::Value::Blob(b)) if b.len() == 8 => {
                i64::from_be_bytes(b.try_into().expect("8 bytes"))
            }
            _ => 0,
        })
    }

    /// Every record of `c`, sorted by id; `cosine` says whether its index is a cosine
    /// one (whose HNSW files keep unit vectors and their lengths apart).
    pub fn records(&self, c: &ChromaCollection, cosine: bool) -> Result<Vec<ChromaRecord>> {
        let mut fields = match &c.metadata_segment {
            Some(segment) => self.segment_records(segment)?,
            None => BTreeMap::new(),
        };
        let metadata_done = match &c.metadata_segment {
            Some(s) => self.max_seq_id(s)?,
            None => 0,
        };
        let dim = c.dimension.unwrap_or(0) as usize;
        let (mut vectors, vectors_done) = match &c.vector_segment {
            Some(segment) if hnsw_files::is_persisted(&self.path.join(segment)) => (
                hnsw_files::read_vectors(&self.path.join(segment), dim, cosine)?,
                self.max_seq_id(segment)?,
            ),
            _ => (HashMap::new(), 0),
        };
        for (seq, op) in self.queue(&c.id, metadata_done.min(vectors_done))? {
            if seq > metadata_done {
                apply_fields(&mut fields, &op);
            }
            if seq > vectors_done {
                apply_vector(&mut vectors, &op);
            }
        }
        let mut out = Vec::with_capacity(fields.len());
        for (id, f) in fields {
            let Some(embedding) = vectors.remove(&id) else {
                return Err(Error::invalid(format!(
                    "collection {}: record {id} has no vector in the HNSW files or the queue",
                    c.name
                )));
            };
            if dim != 0 && embedding.len() != dim {
                return Err(Error::invalid(format!(
                    "collection {}: record {id} has {} dimensions, the collection {dim}",
                    c.name,
                    embedding.len()
                )));
            }
            out.push(ChromaRecord {
                id,
                embedding,
                document: f.document,
                uri: f.uri,
                metadata: (!f.metadata.is_empty()).then_some(f.metadata),
            });
        }
        Ok(out)
    }

    /// The metadata segment's records: id → document, URI and metadata.
    fn segment_records(&self, segment: &str) -> Result<BTreeMap<String, Fields>> {
        let mut by_row: HashMap<i64, String> = HashMap::new();
        let mut records: BTreeMap<String, Fields> = BTreeMap::new();
        {
            let mut stmt = self
                .conn
                .prepare("SELECT id, embedding_id FROM embeddings WHERE segment_id = ?1")
                .map_err(sql)?;
            let rows = stmt
                .query_map([segment], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                })
                .map_err(sql)?;
            for row in rows {
                let (row, id) = row.map_err(sql)?;
                records.insert(id.clone(), Fields::default());
                by_row.insert(row, id);
            }
        }
        let mut field = |id: &str, key: String, value: MetadataValue| {
            let f = records.get_mut(id).expect("every row's record");
            match (key.as_str(), value) {
                (DOCUMENT_KEY, MetadataValue::Str(d)) => f.document = Some(d),
                (URI_KEY, MetadataValue::Str(u)) => f.uri = Some(u),
                (_, value) => {
                    f.metadata.insert(key, value);
                }
            }
            Ok(())
        };
        self.metadata_rows("embedding_metadata", segment, &by_row, &mut field)?;
        // Array values, one row per element (`embedding_metadata_array`, Chroma 1.5).
        let has_arrays = self
            .conn
            .query_row(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'embedding_metadata_array'",
                [],
                |_| Ok(()),
            )
            .optional()
            .map_err(sql)?
            .is_some();
        if has_arrays {
            let mut element = |id: &str, key: String, value: MetadataValue| {
                let f = records.get_mut(id).expect("every row's record");
                push_element(&mut f.metadata, key, value)
            };
            self.metadata_rows("embedding_metadata_array", segment, &by_row, &mut element)?;
        }
        Ok(records)
    }

    /// Calls `each` with (record id, key, value) for every row of `table` (with
    /// `embedding_metadata`'s columns) of the records of `segment`, in row order.
    fn metadata_rows(
        &self,
        table: &str,
        segment: &str,
        by_row: &HashMap<i64, String>,
        each: &mut MetadataSink<'_>,
    ) -> Result<()> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT m.id, m.key, m.string_value, m.int_value, m.float_value, m.bool_value
                 FROM {table} m JOIN embeddings e ON e.id = m.id
                 WHERE e.segment_id = ?1 ORDER BY m.rowid"
            ))
            .map_err(sql)?;
        let rows = stmt
            .query_map([segment], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, typed(r, 2)?))
            })
            .map_err(sql)?;
        for row in rows {
            let (row, key, value) = row.map_err(sql)?;
            if let (Some(id), Some(value)) = (by_row.get(&row), value) {
                each(id, key, value)?;
            }
        }
        Ok(())
    }

    /// The queue's operations on collection `id` after sequence number `after`, in order.
    fn queue(&self, id: &str, after: i64) -> Result<Vec<(i64, QueuedOp)>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT seq_id, operation, id, vector, encoding, metadata FROM embeddings_queue
                 WHERE topic LIKE ?1 AND seq_id > ?2 ORDER BY seq_id",
            )
            .map_err(sql)?;
        let rows = stmt
            .query_map(rusqlite::params![format!("%/{id}"), after], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<Vec<u8>>>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, Option<String>>(5)?,
                ))
            })
            .map_err(sql)?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, operation, record, vector, encoding, metadata) = row.map_err(sql)?;
            let kind = match operation {
                0 => OpKind::Add,
                1 => OpKind::Update,
                2 => OpKind::Upsert,
                3 => OpKind::Delete,
                other => {
                    return Err(Error::invalid(format!(
                        "queue operation {seq} has an unknown kind {other}"
                    )))
                }
            };
            let vector = match (vector, encoding.as_deref()) {
                (None, _) => None,
                (Some(bytes), Some("FLOAT32") | None) if bytes.len() % 4 == 0 => Some(
                    bytes
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
                        .collect(),
                ),
                (Some(_), encoding) => {
                    return Err(Error::invalid(format!(
                        "queue operation {seq}: vectors encoded as {encoding:?} are not supported"
                    )))
                }
            };
            let metadata = match metadata.filter(|m| !m.trim().is_empty()) {
                None => Vec::new(),
                Some(text) => {
                    let map: serde_json::Map<String, serde_json::Value> =
                        serde_json::from_str(&text).map_err(|e| {
                            Error::invalid(format!("queue operation {seq}: metadata: {e}"))
                        })?;
                    map.into_iter()
                        .map(|(k, v)| Ok((k, json_value(&v)?)))
                        .collect::<Result<_>>()?
                }
            };
            out.push((
                seq,
                QueuedOp {
                    kind,
                    id: record,
                    vector,
                    metadata,
                },
            ));
        }
        Ok(out)
    }
}

/// The value of columns `first..first + 4` (string, int, float, bool); `None` when all
/// are NULL.
fn typed(r: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Option<MetadataValue>> {
    if let Some(s) = r.get::<_, Option<String>>(first)? {
        return Ok(Some(MetadataValue::Str(s)));
    }
    if let Some(i) = r.get::<_, Option<i64>>(first + 1)? {
        return Ok(Some(MetadataValue::Int(i)));
    }
    if let Some(f) = r.get::<_, Option<f64>>(first + 2)? {
        return Ok(Some(MetadataValue::Float(f)));
    }
    Ok(r.get::<_, Option<i64>>(first + 3)?
        .map(|b| MetadataValue::Bool(b != 0)))
}

/// Appends `value` to the array under `key`.
fn push_element(metadata: &mut Metadata, key: String, value: MetadataValue) -> Result<()> {
    let entry = metadata.entry(key.clone());
    let mismatch = || Error::invalid(format!("metadata array {key} mixes element types"));
    use std::collections::btree_map::Entry;
    match (entry, value) {
        (Entry::Vacant(v), value) => {
            v.insert(match value {
                MetadataValue::Str(s) => MetadataValue::StrArray(vec![s]),
                MetadataValue::Int(i) => MetadataValue::IntArray(vec![i]),
                MetadataValue::Float(f) => MetadataValue::FloatArray(vec![f]),
                MetadataValue::Bool(b) => MetadataValue::BoolArray(vec![b]),
                _ => return Err(mismatch()),
            });
        }
        (Entry::Occupied(mut o), value) => match (o.get_mut(), value) {
            (MetadataValue::StrArray(a), MetadataValue::Str(s)) => a.push(s),
            (MetadataValue::IntArray(a), MetadataValue::Int(i)) => a.push(i),
            (MetadataValue::FloatArray(a), MetadataValue::Float(f)) => a.push(f),
            (MetadataValue::BoolArray(a), MetadataValue::Bool(b)) => a.push(b),
            _ => return Err(mismatch()),
        },
    }
    Ok(())
}

/// A queued metadata value: `None` for JSON null (the key is removed).
fn json_value(v: &serde_json::Value) -> Result<Option<MetadataValue>> {
    use serde_json::Value;
    let scalar = |v: &Value| -> Result<MetadataValue> {
        Ok(match v {
            Value::Bool(b) => MetadataValue::Bool(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => MetadataValue::Int(i),
                None => MetadataValue::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::String(s) => MetadataValue::Str(s.clone()),
            other => {
                return Err(Error::invalid(format!(
                    "unsupported metadata value {other}"
                )))
            }
        })
    };
    Ok(match v {
        Value::Null => None,
        Value::Array(items) => {
            let mut out: Metadata = Metadata::new();
            for item in items {
                push_element(&mut out, String::new(), scalar(item)?)?;
            }
            Some(
                out.remove("")
                    .unwrap_or(MetadataValue::StrArray(Vec::new())),
            )
        }
        v => Some(scalar(v)?),
    })
}

fn apply_fields(records: &mut BTreeMap<String, Fields>, op: &QueuedOp) {
    let exists = records.contains_key(&op.id);
    match op.kind {
        OpKind::Delete => {
            records.remove(&op.id);
        }
        OpKind::Add if exists => {}
        OpKind::Update if !exists => {}
        OpKind::Add | OpKind::Update | OpKind::Upsert => {
            let f = records.entry(op.id.clone()).or_default();
            for (key, value) in &op.metadata {
                match (key.as_str(), value) {
                    (DOCUMENT_KEY, Some(MetadataValue::Str(d))) => f.document = Some(d.clone()),
                    (DOCUMENT_KEY, None) => f.document = None,
                    (URI_KEY, Some(MetadataValue::Str(u))) => f.uri = Some(u.clone()),
                    (URI_KEY, None) => f.uri = None,
                    (_, Some(v)) => {
                        f.metadata.insert(key.clone(), v.clone());
                    }
                    (_, None) => {
                        f.metadata.remove(key);
                    }
                }
            }
        }
    }
}

fn apply_vector(vectors: &mut HashMap<String, Vec<f32>>, op: &QueuedOp) {
    let exists = vectors.contains_key(&op.id);
    match (op.kind, &op.vector) {
        (OpKind::Delete, _) => {
            vectors.remove(&op.id);
        }
        (OpKind::Add, _) if exists => {}
        (OpKind::Update, _) if !exists => {}
        (_, Some(v)) => {
            vectors.insert(op.id.clone(), v.clone());
        }
        (_, None) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queued_values_parse_with_nulls_and_arrays() {
        let v = |j: serde_json::Value| json_value(&j).unwrap();
        assert_eq!(v(serde_json::json!(null)), None);
        assert_eq!(v(serde_json::json!(3)), Some(MetadataValue::Int(3)));
        assert_eq!(v(serde_json::json!(0.5)), Some(MetadataValue::Float(0.5)));
        assert_eq!(
            v(serde_json::json!(["a", "b"])),
            Some(MetadataValue::StrArray(vec!["a".into(), "b".into()]))
        );
        assert!(json_value(&serde_json::json!([1, "x"])).is_err());
    }

    #[test]
    fn queue_operations_follow_chromas_semantics() {
        let op = |kind, id: &str, meta: Vec<(&str, Option<MetadataValue>)>| QueuedOp {
            kind,
            id: id.into(),
            vector: Some(vec![3.0, 4.0]),
            metadata: meta.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        };
        let mut records = BTreeMap::new();
        let mut vectors = HashMap::new();
        let s = |x: &str| Some(MetadataValue::Str(x.into()));
        for o in [
            op(
                OpKind::Add,
                "a",
                vec![("k", s("1")), (DOCUMENT_KEY, s("doc"))],
            ),
            op(OpKind::Add, "a", vec![("k", s("ignored"))]),
            op(OpKind::Update, "missing", vec![("k", s("x"))]),
            op(OpKind::Upsert, "b", vec![("k", s("2"))]),
            op(OpKind::Update, "a", vec![("k", None), ("j", s("3"))]),
            op(OpKind::Delete, "b", vec![]),
        ] {
            apply_fields(&mut records, &o);
            apply_vector(&mut vectors, &o);
        }
        assert_eq!(records.keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!(records["a"].document.as_deref(), Some("doc"));
        assert_eq!(
            records["a"].metadata,
            Metadata::from([("j".to_owned(), MetadataValue::Str("3".into()))])
        );
        assert_eq!(vectors.len(), 1);
        assert_eq!(vectors["a"], vec![3.0, 4.0]);
    }
}
