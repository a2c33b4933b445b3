//! Metadata of records and collections: keys, values, limits, and their JSON forms.

use super::*;

fn validate_metadata_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::invalid("Metadata key cannot be empty"));
    }
    if key.starts_with('#') || key.starts_with('$') {
        return Err(Error::invalid(format!(
            "Metadata key cannot start with '#' or '$': {}",
            quote(key)
        )));
    }
    check_bytes(key.len(), MAX_METADATA_KEY_BYTES, || {
        format!("metadata key {}", quote(key))
    })
}

fn validate_metadata_string(key: &str, s: &str) -> Result<()> {
    check_bytes(s.len(), MAX_METADATA_STRING_BYTES, || {
        format!("metadata value of key {}", quote(key))
    })
}

/// Checks one metadata value against the limits (arrays non-empty and bounded, strings
/// bounded, floats finite).
fn validate_metadata_value(key: &str, value: &MetadataValue) -> Result<()> {
    let array_len = match value {
        MetadataValue::Bool(_) | MetadataValue::Int(_) => None,
        MetadataValue::Float(f) => {
            if !f.is_finite() {
                return Err(Error::invalid(format!(
                    "metadata value of key {} must be finite, got {f}",
                    quote(key)
                )));
            }
            None
        }
        MetadataValue::Str(s) => {
            validate_metadata_string(key, s)?;
            None
        }
        MetadataValue::BoolArray(a) => Some(a.len()),
        MetadataValue::IntArray(a) => Some(a.len()),
        MetadataValue::FloatArray(a) => {
            if a.iter().any(|f| !f.is_finite()) {
                return Err(Error::invalid(format!(
                    "metadata array of key {} must contain only finite numbers",
                    quote(key)
                )));
            }
            Some(a.len())
        }
        MetadataValue::StrArray(a) => {
            for s in a {
                validate_metadata_string(key, s)?;
            }
            Some(a.len())
        }
        MetadataValue::SparseVector(v) => {
            v.validate()
                .map_err(|e| Error::invalid(format!("Invalid sparse vector: {}", e.message())))?;
            if v.indices.len() > MAX_SPARSE_VECTOR_LEN {
                return Err(Error::invalid(format!(
                    "sparse vector of key {} has {} dimensions, the limit is {MAX_SPARSE_VECTOR_LEN}",
                    quote(key),
                    v.indices.len()
                )));
            }
            if let Some(tokens) = &v.tokens {
                for t in tokens {
                    validate_metadata_string(key, t)?;
                }
            }
            None
        }
    };
    match array_len {
        Some(0) => Err(Error::invalid(format!(
            "metadata value of key {} cannot be an empty array",
            quote(key)
        ))),
        Some(n) if n > MAX_METADATA_ARRAY_LEN => Err(Error::invalid(format!(
            "metadata array of key {} has {n} elements, the limit is {MAX_METADATA_ARRAY_LEN}",
            quote(key)
        ))),
        _ => Ok(()),
    }
}

/// At most [`MAX_METADATA_KEYS`] keys.
fn check_key_count(keys: usize) -> Result<()> {
    if keys > MAX_METADATA_KEYS {
        return Err(Error::invalid(format!(
            "metadata has {keys} keys, the limit is {MAX_METADATA_KEYS}"
        )));
    }
    Ok(())
}

/// Checks already-typed metadata: keys, values, limits; `None` values (key removals) only
/// when `allow_null`.
pub fn validate_update_metadata(metadata: &UpdateMetadata, allow_null: bool) -> Result<()> {
    check_key_count(metadata.len())?;
    for (key, value) in metadata {
        validate_metadata_key(key)?;
        match value {
            Some(v) => validate_metadata_value(key, v)?,
            None if allow_null => {}
            None => {
                return Err(Error::invalid(format!(
                    "metadata value of key {} cannot be null",
                    quote(key)
                )))
            }
        }
    }
    Ok(())
}

/// Checks stored-shape metadata (no `None` values possible).
pub fn validate_metadata(metadata: &Metadata) -> Result<()> {
    check_key_count(metadata.len())?;
    for (key, value) in metadata {
        validate_metadata_key(key)?;
        validate_metadata_value(key, value)?;
    }
    Ok(())
}

/// One JSON metadata value. Numbers that fit `i64` are ints, all others floats; an array
/// mixing ints and floats is a `FloatArray` (as Chroma's untagged deserialization does).
fn metadata_value_from_json(key: &str, v: &Value) -> Result<MetadataValue> {
    let bad = |what: &str| {
        Error::invalid(format!(
            "metadata value of key {} must be a bool, number, string or non-empty array of \
             one of those types, got {what}: {}",
            quote(key),
            show(v)
        ))
    };
    let value = match v {
        Value::Bool(b) => MetadataValue::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => MetadataValue::Int(i),
            None => MetadataValue::Float(n.as_f64().ok_or_else(|| bad("a number"))?),
        },
        Value::String(s) => MetadataValue::Str(s.clone()),
        Value::Object(_) if SparseVector::looks_like(v) => {
            MetadataValue::SparseVector(SparseVector::parse(v)?)
        }
        Value::Object(_) => return Err(bad("an object")),
        Value::Null => return Err(bad("null")),
        Value::Array(items) => {
            let Some(first) = items.first() else {
                return Err(Error::invalid(format!(
                    "metadata value of key {} cannot be an empty array",
                    quote(key)
                )));
            };
            let mixed = || bad("a mixed or nested array");
            match first {
                Value::Bool(_) => MetadataValue::BoolArray(
                    items
                        .iter()
                        .map(|i| i.as_bool().ok_or_else(mixed))
                        .collect::<Result<_>>()?,
                ),
                Value::String(_) => MetadataValue::StrArray(
                    items
                        .iter()
                        .map(|i| i.as_str().map(str::to_owned).ok_or_else(mixed))
                        .collect::<Result<_>>()?,
                ),
                Value::Number(_) => {
                    if items.iter().all(|i| i.as_i64().is_some()) {
                        MetadataValue::IntArray(items.iter().filter_map(Value::as_i64).collect())
                    } else {
                        MetadataValue::FloatArray(
                            items
                                .iter()
                                .map(|i| i.as_f64().ok_or_else(mixed))
                                .collect::<Result<_>>()?,
                        )
                    }
                }
                _ => return Err(mixed()),
            }
        }
    };
    validate_metadata_value(key, &value)?;
    Ok(value)
}

/// Record metadata from JSON. `null` values are key removals, allowed only when
/// `allow_null` (update/upsert), and become `None`.
pub fn metadata_from_json(map: &Map<String, Value>, allow_null: bool) -> Result<UpdateMetadata> {
    check_key_count(map.len())?;
    let mut out = BTreeMap::new();
    for (key, v) in map {
        validate_metadata_key(key)?;
        let value = match v {
            Value::Null if allow_null => None,
            Value::Null => {
                return Err(Error::invalid(format!(
                    "metadata value of key {} cannot be null",
                    quote(key)
                )))
            }
            v => Some(metadata_value_from_json(key, v)?),
        };
        out.insert(key.clone(), value);
    }
    Ok(out)
}

/// A write's `metadatas` list: each element an object or `null`. Errors carry the index
/// like Chroma's `Validation error: metadatas: Invalid metadata at index i`.
pub fn metadatas_from_json(
    values: &[Value],
    allow_null: bool,
) -> Result<Vec<Option<UpdateMetadata>>> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let at = |detail: &str| {
                Error::invalid(format!(
                    "Validation error: metadatas: Invalid metadata at index {i}: {detail}"
                ))
            };
            match v {
                Value::Null => Ok(None),
                Value::Object(map) => metadata_from_json(map, allow_null)
                    .map(Some)
                    .map_err(|e| at(e.message())),
                other => Err(at(&format!(
                    "expected an object or null, got {}",
                    show(other)
                ))),
            }
        })
        .collect()
}

/// Collection metadata (create, or modify's `new_metadata`): `null` is `None`, `{}` is
/// rejected like Chroma does, `null` values are rejected.
pub fn collection_metadata_from_json(v: &Value) -> Result<Option<Metadata>> {
    match v {
        Value::Null => Ok(None),
        Value::Object(map) if map.is_empty() => Err(Error::invalid(
            "Validation error: metadata: Metadata cannot be empty",
        )),
        Value::Object(map) => {
            let m = metadata_from_json(map, false)?;
            Ok(Some(
                m.into_iter()
                    .filter_map(|(k, v)| v.map(|v| (k, v)))
                    .collect(),
            ))
        }
        other => Err(Error::invalid(format!(
            "metadata must be an object or null, got {}",
            show(other)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::test_helpers::*;
    use super::*;

    #[test]
    fn metadata_values() {
        let m = metadata_from_json(
            &obj(json!({
                "b": true, "i": 3, "f": 2.5, "s": "x", "ba": [true, false], "ia": [1, 2],
                "fa": [1.5, 2], "sa": ["a", "b"], "big": 18446744073709551615u64, "n": null
            })),
            true,
        )
        .unwrap();
        assert_eq!(m["b"], Some(MetadataValue::Bool(true)));
        assert_eq!(m["i"], Some(MetadataValue::Int(3)));
        assert_eq!(m["f"], Some(MetadataValue::Float(2.5)));
        assert_eq!(m["s"], Some(MetadataValue::Str("x".into())));
        assert_eq!(m["ba"], Some(MetadataValue::BoolArray(vec![true, false])));
        assert_eq!(m["ia"], Some(MetadataValue::IntArray(vec![1, 2])));
        assert_eq!(m["fa"], Some(MetadataValue::FloatArray(vec![1.5, 2.0])));
        assert_eq!(
            m["sa"],
            Some(MetadataValue::StrArray(vec!["a".into(), "b".into()]))
        );
        assert_eq!(
            m["big"],
            Some(MetadataValue::Float(18446744073709551615u64 as f64))
        );
        assert_eq!(m["n"], None);
        assert!(metadata_from_json(&Map::new(), false).unwrap().is_empty());
    }

    #[test]
    fn metadata_errors() {
        let bad = |v: Value, allow_null: bool, needle: &str| {
            fails(metadata_from_json(&obj(v), allow_null), needle)
        };
        bad(json!({"": 1}), false, "Metadata key cannot be empty");
        bad(
            json!({"#k": 1}),
            false,
            "Metadata key cannot start with '#' or '$': #k",
        );
        bad(
            json!({"$k": 1}),
            true,
            "Metadata key cannot start with '#' or '$': $k",
        );
        bad(
            json!({"k".repeat(MAX_METADATA_KEY_BYTES + 1): 1}),
            false,
            "the limit is 1024",
        );
        bad(json!({"k": null}), false, "key k cannot be null");
        bad(json!({"k": {"a": 1}}), false, "key k must be a bool");
        bad(json!({"k": {"a": 1}}), true, "got an object");
        bad(json!({"k": []}), false, "key k cannot be an empty array");
        bad(json!({"k": [1, "a"]}), false, "mixed or nested array");
        bad(json!({"k": [true, 1]}), false, "mixed or nested array");
        bad(json!({"k": ["a", null]}), false, "mixed or nested array");
        bad(json!({"k": [[1]]}), false, "mixed or nested array");
        bad(json!({"k": [{"a": 1}]}), false, "mixed or nested array");
        bad(json!({"k": [null]}), false, "mixed or nested array");
        bad(
            json!({"k": "x".repeat(MAX_METADATA_STRING_BYTES + 1)}),
            false,
            "key k is",
        );
        bad(
            json!({"k": ["x".repeat(MAX_METADATA_STRING_BYTES + 1)]}),
            false,
            "key k is",
        );
        bad(
            json!({"k": vec![1; MAX_METADATA_ARRAY_LEN + 1]}),
            false,
            "array of key k has",
        );
        let many: Map<String, Value> = (0..=MAX_METADATA_KEYS)
            .map(|i| (format!("k{i}"), json!(1)))
            .collect();
        fails(metadata_from_json(&many, false), "the limit is 1024");
    }

    #[test]
    fn typed_metadata_checks() {
        let mut m = UpdateMetadata::new();
        m.insert("a".into(), None);
        validate_update_metadata(&m, true).unwrap();
        fails(validate_update_metadata(&m, false), "key a cannot be null");
        m.insert("f".into(), Some(MetadataValue::Float(f64::NAN)));
        fails(validate_update_metadata(&m, true), "key f must be finite");
        let mut m = UpdateMetadata::new();
        m.insert(
            "fa".into(),
            Some(MetadataValue::FloatArray(vec![1.0, f64::INFINITY])),
        );
        fails(validate_update_metadata(&m, true), "array of key fa");
        let mut m = UpdateMetadata::new();
        m.insert("e".into(), Some(MetadataValue::StrArray(vec![])));
        fails(
            validate_update_metadata(&m, true),
            "key e cannot be an empty array",
        );
        validate_metadata(&meta(json!({"a": 1, "b": [1.5]}))).unwrap();
        fails(
            validate_metadata(&meta(json!({"#a": 1}))),
            "cannot start with '#'",
        );
        fails(validate_metadata(&meta(json!({"": 1}))), "cannot be empty");
    }

    #[test]
    fn metadata_lists() {
        let list = metadatas_from_json(&[json!({"a": 1}), Value::Null, json!({})], false).unwrap();
        assert_eq!(list.len(), 3);
        assert!(list[1].is_none());
        assert_eq!(list[2].as_ref().map(BTreeMap::len), Some(0));
        fails(
            metadatas_from_json(&[json!({"a": 1}), json!({"#a": 1})], false),
            "Validation error: metadatas: Invalid metadata at index 1: Metadata key cannot",
        );
        fails(
            metadatas_from_json(&[json!(3)], false),
            "at index 0: expected an object or null",
        );
        fails(
            metadatas_from_json(&[json!({"a": null})], false),
            "at index 0",
        );
        metadatas_from_json(&[json!({"a": null})], true).unwrap();
    }

    #[test]
    fn collection_metadata() {
        assert_eq!(collection_metadata_from_json(&Value::Null).unwrap(), None);
        assert_eq!(
            collection_metadata_from_json(&json!({"hnsw:space": "ip", "m": 1})).unwrap(),
            Some(meta(json!({"hnsw:space": "ip", "m": 1})))
        );
        fails(
            collection_metadata_from_json(&json!({})),
            "Metadata cannot be empty",
        );
        fails(
            collection_metadata_from_json(&json!({"a": null})),
            "key a cannot be null",
        );
        fails(
            collection_metadata_from_json(&json!({"$a": 1})),
            "cannot start with",
        );
        fails(
            collection_metadata_from_json(&json!([1])),
            "metadata must be an object or null",
        );
    }
}
