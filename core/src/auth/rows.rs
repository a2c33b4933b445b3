//! Row-level grants: a caller's `row_filter`, a Chroma `where` document carried by its API
//! key or JWT, limits which records of a collection it sees and may change.
//!
//! - Reads (get, query, count, peek) and deletes: the row filter is ANDed into the
//!   request's own filter ([`RowFilter::restrict`]), so records outside it are invisible.
//! - Writes (add, upsert, update): every record a write touches must lie inside the
//!   filter before the write (if it exists) and after it ([`RowFilter::check_writes`]);
//!   otherwise the whole write is refused with `PermissionDenied` and nothing is written.
//!   The check is made against the records as they are in the manifest version the write
//!   commits on (see [`crate::access`]).

use std::collections::HashMap;

use serde_json::Value;

use crate::error::{Error, ErrorCode, Result};
use crate::model::{Filter, Operation, Record, Where};

/// A parsed row filter, with the `where` document it was parsed from (what key records
/// store).
#[derive(Debug, Clone, PartialEq)]
pub struct RowFilter {
    where_: Where,
    json: Value,
}

impl RowFilter {
    /// Parses a `where` document; the error names the `row_filter` field.
    pub fn parse(v: &Value) -> Result<Self> {
        Where::parse(v)
            .map(|where_| Self {
                where_,
                json: v.clone(),
            })
            .map_err(|e| Error::invalid(format!("row_filter: {}", e.message())))
    }

    /// The `where` document.
    pub fn to_json(&self) -> Value {
        self.json.clone()
    }

    /// This filter AND `other`: `{"$and": [this, other]}`.
    pub fn and(&self, other: &RowFilter) -> RowFilter {
        RowFilter {
            where_: Where::And(vec![self.where_.clone(), other.where_.clone()]),
            json: serde_json::json!({ "$and": [self.json, other.json] }),
        }
    }

    /// Whether the row filter `theirs` (a `where` document) is this one, or this one ANDed
    /// with more (as [`RowFilter::and`] writes it): everything it admits, this admits too.
    pub fn is_narrowed_by(&self, theirs: &Value) -> bool {
        if *theirs == self.json {
            return true;
        }
        theirs
            .get("$and")
            .and_then(Value::as_array)
            .is_some_and(|parts| parts.len() == 2 && parts[0] == self.json)
    }

    /// `filter` AND this row filter.
    pub fn restrict(&self, filter: Option<Filter>) -> Filter {
        let mut f = filter.unwrap_or_default();
        f.where_ = Some(match f.where_.take() {
            Some(w) => Where::And(vec![w, self.where_.clone()]),
            None => self.where_.clone(),
        });
        f
    }

    /// Whether a record with this metadata and document lies inside the filter.
    pub fn admits(&self, record: &Record) -> bool {
        self.where_.matches(
            &record.id,
            record.metadata.as_ref(),
            record.document.as_deref(),
        )
    }

    /// Checks validated write operations against the records they touch (`existing`,
    /// by id; ids absent from it do not exist): each existing record must be inside the
    /// filter, and so must each record as the operation leaves it.
    pub fn check_writes(
        &self,
        ops: &[Operation],
        existing: &HashMap<String, Record>,
    ) -> Result<()> {
        for op in ops {
            let current = existing.get(&op.id);
            if current.is_some_and(|r| !self.admits(r)) {
                return Err(outside(&op.id, "exists outside"));
            }
            // The filter sees only metadata and documents: leave the embedding behind.
            let probe = Operation {
                kind: op.kind,
                id: op.id.clone(),
                embedding: None,
                document: op.document.clone(),
                uri: None,
                metadata: op.metadata.clone(),
            };
            if probe
                .apply(current.cloned())
                .is_some_and(|r| !self.admits(&r))
            {
                return Err(outside(&op.id, "would fall outside"));
            }
        }
        Ok(())
    }
}

fn outside(id: &str, how: &str) -> Error {
    Error::new(
        ErrorCode::PermissionDenied,
        format!("write rejected: record {id:?} {how} the caller's row filter; nothing was written"),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::{MetadataValue, OpKind};

    fn rf() -> RowFilter {
        RowFilter::parse(&json!({"team": "a"})).unwrap()
    }

    fn record(id: &str, team: Option<&str>, doc: Option<&str>) -> Record {
        Record {
            id: id.into(),
            embedding: vec![],
            document: doc.map(String::from),
            uri: None,
            metadata: team.map(|t| [("team".to_owned(), MetadataValue::Str(t.into()))].into()),
        }
    }

    fn op(kind: OpKind, id: &str, team: Option<Option<&str>>) -> Operation {
        Operation {
            kind,
            id: id.into(),
            embedding: Some(vec![1.0]),
            document: None,
            uri: None,
            metadata: team
                .map(|t| [("team".to_owned(), t.map(|t| MetadataValue::Str(t.into())))].into()),
        }
    }

    #[test]
    fn parse_errors_name_the_field() {
        let e = RowFilter::parse(&json!({"team": {"$bogus": 1}})).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidArgument);
        assert!(e.message().starts_with("row_filter: "), "{e}");
    }

    #[test]
    fn restrict_ands_into_the_request_filter() {
        let rf = rf();
        let alone = rf.restrict(None);
        assert!(alone.matches("x", record("x", Some("a"), None).metadata.as_ref(), None));
        assert!(!alone.matches("x", record("x", Some("b"), None).metadata.as_ref(), None));
        let request = Filter::parse(
            Some(&json!({"team": "b"})),
            Some(&json!({"$contains": "z"})),
        )
        .unwrap();
        let both = rf.restrict(request);
        let b = record("x", Some("b"), Some("z"));
        assert!(!both.matches(&b.id, b.metadata.as_ref(), b.document.as_deref()));
        assert!(both.where_document.is_some(), "the document filter is kept");
    }

    #[test]
    fn writes_must_stay_inside() {
        let rf = rf();
        let existing: HashMap<String, Record> = [
            ("in".to_owned(), record("in", Some("a"), None)),
            ("out".to_owned(), record("out", Some("b"), None)),
        ]
        .into();
        let ok = [
            op(OpKind::Add, "new", Some(Some("a"))),
            op(OpKind::Update, "in", None),
            op(OpKind::Upsert, "in", Some(Some("a"))),
            // Update of a missing id writes nothing.
            op(OpKind::Update, "missing", Some(Some("b"))),
            // Add of an existing id leaves it as it is (inside).
            op(OpKind::Add, "in", Some(Some("b"))),
        ];
        rf.check_writes(&ok, &existing).unwrap();

        let refused = [
            (
                op(OpKind::Add, "new", Some(Some("b"))),
                "would fall outside",
            ),
            (op(OpKind::Add, "new", None), "would fall outside"),
            (
                op(OpKind::Upsert, "in", Some(Some("b"))),
                "would fall outside",
            ),
            (op(OpKind::Update, "in", Some(None)), "would fall outside"),
            (op(OpKind::Update, "out", Some(Some("a"))), "exists outside"),
            (op(OpKind::Add, "out", Some(Some("a"))), "exists outside"),
        ];
        for (o, why) in refused {
            let batch = [op(OpKind::Add, "fine", Some(Some("a"))), o.clone()];
            let e = rf.check_writes(&batch, &existing).unwrap_err();
            assert_eq!(e.code(), ErrorCode::PermissionDenied, "{o:?}");
            assert!(e.message().contains(why), "{o:?}: {e}");
            assert!(e.message().contains(&format!("{:?}", o.id)), "{e}");
        }
    }

    #[test]
    fn document_conditions_apply_to_writes() {
        let rf = RowFilter::parse(&json!({"#document": {"$contains": "public"}})).unwrap();
        let mut add = op(OpKind::Add, "d", None);
        add.document = Some("a public note".into());
        rf.check_writes(std::slice::from_ref(&add), &HashMap::new())
            .unwrap();
        add.document = Some("secret".into());
        assert!(rf.check_writes(&[add], &HashMap::new()).is_err());
    }
}
