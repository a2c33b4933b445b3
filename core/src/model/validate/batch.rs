//! Write requests (add, update, upsert, delete) as batches of records.

use super::*;

/// One add/upsert/update/delete request, as parsed from JSON but not yet validated.
/// Absent lists are `None`; a `None` element keeps the old value (update/upsert) or
/// leaves the field empty (add).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteBatch {
    pub ids: Vec<String>,
    pub embeddings: Option<Vec<Option<Vec<f32>>>>,
    pub documents: Option<Vec<Option<String>>>,
    pub uris: Option<Vec<Option<String>>>,
    pub metadatas: Option<Vec<Option<UpdateMetadata>>>,
}

impl WriteBatch {
    /// Validates the batch and turns it into one operation per id, in order, with the
    /// batch's embedding dimension (`None` when no embedding is given).
    ///
    /// Checks: at most [`MAX_RECORDS_PER_WRITE`] records; every list as long as `ids`; valid and
    /// unique ids; add/upsert carry an embedding for every record; all embeddings valid
    /// and of one dimension; documents and URIs within limits; metadata valid, without
    /// `null` values on add. `Delete` takes only ids.
    pub fn into_operations(self, kind: OpKind) -> Result<(Vec<Operation>, Option<usize>)> {
        let n = self.ids.len();
        if n > MAX_RECORDS_PER_WRITE {
            return Err(Error::invalid(format!(
                "batch of {n} records exceeds the limit of {MAX_RECORDS_PER_WRITE}"
            )));
        }
        let lens = [
            ("embeddings", self.embeddings.as_ref().map(Vec::len)),
            ("documents", self.documents.as_ref().map(Vec::len)),
            ("uris", self.uris.as_ref().map(Vec::len)),
            ("metadatas", self.metadatas.as_ref().map(Vec::len)),
        ];
        for (field, len) in lens {
            if let Some(len) = len.filter(|&l| l != n) {
                return Err(Error::invalid(format!(
                    "Inconsistent number of IDs, embeddings, documents, URIs and metadatas \
                     ({n} ids, {len} {field})"
                )));
            }
        }
        for id in &self.ids {
            validate_id(id)?;
        }
        check_unique(&self.ids)?;

        if kind == OpKind::Delete {
            if let Some((field, _)) = lens.iter().find(|(_, l)| l.is_some()) {
                return Err(Error::invalid(format!(
                    "delete takes only ids, got {field}"
                )));
            }
            return Ok((self.ids.into_iter().map(Operation::delete).collect(), None));
        }

        let verb = match kind {
            OpKind::Add => "add",
            OpKind::Upsert => "upsert",
            _ => "update",
        };
        let embedding_required = matches!(kind, OpKind::Add | OpKind::Upsert);
        if embedding_required && self.embeddings.is_none() && n > 0 {
            return Err(Error::invalid(format!(
                "embeddings are required for {verb}"
            )));
        }
        let mut dim = None;
        if let Some(embeddings) = &self.embeddings {
            for (i, e) in embeddings.iter().enumerate() {
                let Some(e) = e else {
                    if embedding_required {
                        return Err(Error::invalid(format!(
                            "embedding at index {i} is missing: {verb} requires an embedding \
                             for every record"
                        )));
                    }
                    continue;
                };
                match dim {
                    None => dim = Some(e.len()),
                    Some(d) if d != e.len() => {
                        return Err(Error::invalid(
                            "Inconsistent dimensions in provided embeddings",
                        ))
                    }
                    Some(_) => {}
                }
                validate_embedding(e)?;
            }
        }
        for d in self.documents.iter().flatten().flatten() {
            if d.len() > MAX_DOCUMENT_BYTES {
                return Err(Error::invalid(format!(
                    "document of {} bytes exceeds the limit of {MAX_DOCUMENT_BYTES}",
                    d.len()
                )));
            }
        }
        for u in self.uris.iter().flatten().flatten() {
            if u.len() > MAX_URI_BYTES {
                return Err(Error::invalid(format!(
                    "uri of {} bytes exceeds the limit of {MAX_URI_BYTES}",
                    u.len()
                )));
            }
        }
        for (i, m) in self.metadatas.iter().flatten().enumerate() {
            if let Some(m) = m {
                validate_update_metadata(m, kind != OpKind::Add).map_err(|e| {
                    Error::invalid(format!(
                        "Validation error: metadatas: Invalid metadata at index {i}: {}",
                        e.message()
                    ))
                })?;
            }
        }

        let mut embeddings = self.embeddings.map(Vec::into_iter);
        let mut documents = self.documents.map(Vec::into_iter);
        let mut uris = self.uris.map(Vec::into_iter);
        let mut metadatas = self.metadatas.map(Vec::into_iter);
        fn next<T>(it: &mut Option<std::vec::IntoIter<Option<T>>>) -> Option<T> {
            it.as_mut().and_then(Iterator::next).flatten()
        }
        let ops = self
            .ids
            .into_iter()
            .map(|id| Operation {
                kind,
                id,
                embedding: next(&mut embeddings),
                document: next(&mut documents),
                uri: next(&mut uris),
                metadata: next(&mut metadatas),
            })
            .collect();
        Ok((ops, dim))
    }
}

/// Rejects duplicate ids, naming them like Chroma's `DuplicateIDError`.
fn check_unique(ids: &[String]) -> Result<()> {
    let mut seen = HashSet::with_capacity(ids.len());
    let mut dups: Vec<&str> = Vec::new();
    let mut reported = HashSet::new();
    for id in ids {
        if !seen.insert(id.as_str()) && reported.insert(id.as_str()) {
            dups.push(id);
        }
    }
    if dups.is_empty() {
        return Ok(());
    }
    let shown: Vec<String> = dups.iter().take(10).map(|d| quote(d)).collect();
    let more = if dups.len() > 10 {
        format!(" and {} more", dups.len() - 10)
    } else {
        String::new()
    };
    Err(Error::invalid(format!(
        "Expected IDs to be unique, found duplicates of: {}{more}",
        shown.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::test_helpers::*;
    use super::*;

    fn batch(n: usize) -> WriteBatch {
        WriteBatch {
            ids: (0..n).map(|i| format!("id{i}")).collect(),
            embeddings: Some((0..n).map(|i| Some(vec![i as f32, 1.0])).collect()),
            documents: None,
            uris: None,
            metadatas: None,
        }
    }

    #[test]
    fn batch_becomes_operations() {
        let mut b = batch(2);
        b.documents = Some(vec![Some("d0".into()), None]);
        b.uris = Some(vec![None, Some("u1".into())]);
        b.metadatas = Some(vec![
            Some(metadata_from_json(&obj(json!({"a": 1})), false).unwrap()),
            None,
        ]);
        let (ops, dim) = b.into_operations(OpKind::Add).unwrap();
        assert_eq!(dim, Some(2));
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[0].kind, OpKind::Add);
        assert_eq!(ops[0].id, "id0");
        assert_eq!(ops[0].embedding, Some(vec![0.0, 1.0]));
        assert_eq!(ops[0].document.as_deref(), Some("d0"));
        assert_eq!(ops[0].uri, None);
        assert_eq!(
            ops[0].metadata.as_ref().unwrap()["a"],
            Some(MetadataValue::Int(1))
        );
        assert_eq!(ops[1].document, None);
        assert_eq!(ops[1].uri.as_deref(), Some("u1"));
        assert_eq!(ops[1].metadata, None);

        let (ops, dim) = WriteBatch::default().into_operations(OpKind::Add).unwrap();
        assert!(ops.is_empty());
        assert_eq!(dim, None);
    }

    #[test]
    fn update_allows_missing_embeddings_and_null_metadata() {
        let b = WriteBatch {
            ids: vec!["a".into(), "b".into()],
            embeddings: Some(vec![None, Some(vec![1.0, 2.0, 3.0])]),
            metadatas: Some(vec![
                Some(metadata_from_json(&obj(json!({"x": null})), true).unwrap()),
                None,
            ]),
            ..Default::default()
        };
        let (ops, dim) = b.clone().into_operations(OpKind::Update).unwrap();
        assert_eq!(dim, Some(3));
        assert_eq!(ops[0].embedding, None);
        assert_eq!(ops[0].metadata.as_ref().unwrap()["x"], None);
        let only_ids = WriteBatch {
            ids: vec!["a".into()],
            ..Default::default()
        };
        assert_eq!(only_ids.into_operations(OpKind::Update).unwrap().1, None);
        // Upsert allows null metadata values but needs every embedding.
        fails(
            b.clone().into_operations(OpKind::Upsert),
            "embedding at index 0 is missing",
        );
        let mut b2 = b;
        b2.embeddings = Some(vec![Some(vec![0.0; 3]), Some(vec![1.0; 3])]);
        b2.clone().into_operations(OpKind::Upsert).unwrap();
        fails(
            b2.into_operations(OpKind::Add),
            "Invalid metadata at index 0: metadata value of key x cannot be null",
        );
    }

    #[test]
    fn batch_errors() {
        fails(
            WriteBatch {
                ids: vec!["a".into()],
                ..Default::default()
            }
            .into_operations(OpKind::Add),
            "embeddings are required for add",
        );
        fails(
            WriteBatch {
                ids: vec!["a".into()],
                ..Default::default()
            }
            .into_operations(OpKind::Upsert),
            "embeddings are required for upsert",
        );
        let mut b = batch(2);
        b.embeddings.as_mut().unwrap()[1] = None;
        fails(
            b.into_operations(OpKind::Add),
            "embedding at index 1 is missing",
        );

        for field in ["embeddings", "documents", "uris", "metadatas"] {
            let mut b = batch(2);
            match field {
                "embeddings" => b.embeddings = Some(vec![Some(vec![1.0])]),
                "documents" => b.documents = Some(vec![None; 3]),
                "uris" => b.uris = Some(vec![]),
                _ => b.metadatas = Some(vec![None]),
            }
            fails(
                b.into_operations(OpKind::Upsert),
                "Inconsistent number of IDs, embeddings, documents, URIs and metadatas",
            );
        }
        let mut b = batch(2);
        b.uris = Some(vec![None]);
        fails(b.into_operations(OpKind::Add), "(2 ids, 1 uris)");

        let mut b = batch(2);
        b.ids[1] = String::new();
        fails(
            b.into_operations(OpKind::Add),
            "Empty ID, ID must have at least one character",
        );

        let mut b = batch(4);
        b.ids = vec!["a".into(), "b".into(), "a".into(), "a".into()];
        fails(
            b.into_operations(OpKind::Add),
            "Expected IDs to be unique, found duplicates of: a",
        );
        let mut b = batch(4);
        b.ids = vec!["x".into(), "y".into(), "y".into(), "x".into()];
        fails(
            b.into_operations(OpKind::Update),
            "found duplicates of: y, x",
        );

        let mut b = batch(3);
        b.embeddings.as_mut().unwrap()[2] = Some(vec![1.0]);
        fails(
            b.into_operations(OpKind::Add),
            "Inconsistent dimensions in provided embeddings",
        );
        let mut b = batch(2);
        b.embeddings.as_mut().unwrap()[0] = Some(vec![]);
        b.embeddings.as_mut().unwrap()[1] = Some(vec![]);
        fails(
            b.into_operations(OpKind::Add),
            "Each embedding must have at least 1 dimension",
        );
        let mut b = batch(2);
        b.embeddings.as_mut().unwrap()[1] = Some(vec![f32::NAN, 0.0]);
        fails(
            b.into_operations(OpKind::Upsert),
            "Embeddings must not contain NaN or Infinity",
        );

        let mut b = batch(1);
        b.documents = Some(vec![Some("x".repeat(MAX_DOCUMENT_BYTES + 1))]);
        fails(b.into_operations(OpKind::Add), "document of");
        let mut b = batch(1);
        b.uris = Some(vec![Some("x".repeat(MAX_URI_BYTES + 1))]);
        fails(b.into_operations(OpKind::Add), "uri of");

        let mut b = batch(1);
        let mut m = UpdateMetadata::new();
        m.insert("#bad".into(), Some(MetadataValue::Int(1)));
        b.metadatas = Some(vec![Some(m)]);
        fails(
            b.into_operations(OpKind::Upsert),
            "Invalid metadata at index 0: Metadata key",
        );

        let big = WriteBatch {
            ids: (0..=MAX_RECORDS_PER_WRITE).map(|i| i.to_string()).collect(),
            ..Default::default()
        };
        fails(
            big.into_operations(OpKind::Update),
            "exceeds the limit of 100000",
        );
    }

    #[test]
    fn delete_batches() {
        let b = WriteBatch {
            ids: vec!["a".into(), "b".into()],
            ..Default::default()
        };
        let (ops, dim) = b.into_operations(OpKind::Delete).unwrap();
        assert_eq!(ops, vec![Operation::delete("a"), Operation::delete("b")]);
        assert_eq!(dim, None);
        fails(
            batch(1).into_operations(OpKind::Delete),
            "delete takes only ids, got embeddings",
        );
        fails(
            WriteBatch {
                ids: vec!["a".into(), "a".into()],
                ..Default::default()
            }
            .into_operations(OpKind::Delete),
            "duplicates of: a",
        );
    }
}
