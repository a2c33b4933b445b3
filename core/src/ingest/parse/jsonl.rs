//! JSON Lines files: one JSON object a line, each read as a record; blank lines are
//! skipped.

use bytes::Bytes;
use serde_json::{Map, Value};

use super::{json_metadata, required, show, unknown_field, RawRecord, FIELDS};
use crate::ingest::{Location, Rejection};

pub(crate) struct JsonlRecords {
    data: Bytes,
    offset: usize,
    /// The number of the line last read, from 1.
    line: usize,
    failed: bool,
}

impl JsonlRecords {
    /// Reads `data` from its first line.
    pub(super) fn open(data: Bytes) -> Self {
        JsonlRecords {
            data,
            offset: 0,
            line: 0,
            failed: false,
        }
    }
}

impl Iterator for JsonlRecords {
    type Item = Result<(Location, RawRecord), Rejection>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.failed && self.offset < self.data.len() {
            let rest = &self.data[self.offset..];
            let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
            let raw = &rest[..end];
            self.offset += end + 1;
            self.line += 1;
            let at = Location::Line(self.line);
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            let result = match std::str::from_utf8(raw) {
                Err(e) => Err(Rejection::new(format!(
                    "not valid UTF-8 after byte {} of the line",
                    e.valid_up_to()
                ))),
                Ok(text) if text.trim().is_empty() => continue,
                Ok(text) => json_record(text),
            };
            self.failed = result.is_err();
            return Some(result.map(|r| (at, r)).map_err(|e| e.at(at)));
        }
        None
    }
}

fn json_record(text: &str) -> Result<RawRecord, Rejection> {
    let mut map = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => map,
        Ok(other) => {
            return Err(Rejection::new(format!(
                "expected a JSON object, got {}",
                show(&other)
            )))
        }
        Err(e) => return Err(Rejection::new(format!("invalid JSON: {e}"))),
    };
    if let Some(name) = map.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(unknown_field(name, "field"));
    }
    let id = match map.remove("id") {
        Some(Value::String(s)) => s,
        None | Some(Value::Null) => return Err(required("id")),
        Some(other) => {
            return Err(Rejection::field(
                "id",
                format!("id must be a string, got {}", show(&other)),
            ))
        }
    };
    let embedding = match map.remove("embedding") {
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_f64().map(|f| f as f32).ok_or_else(|| {
                    Rejection::field(
                        "embedding",
                        format!("embedding element {i} must be a number, got {}", show(v)),
                    )
                })
            })
            .collect::<Result<Vec<f32>, _>>()?,
        None | Some(Value::Null) => return Err(required("embedding")),
        Some(other) => {
            return Err(Rejection::field(
                "embedding",
                format!(
                    "embedding must be an array of numbers, got {}",
                    show(&other)
                ),
            ))
        }
    };
    let document = json_string(&mut map, "document")?;
    let uri = json_string(&mut map, "uri")?;
    let metadata = match map.remove("metadata") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(json_metadata(&m)?),
        Some(other) => {
            return Err(Rejection::field(
                "metadata",
                format!("metadata must be an object or null, got {}", show(&other)),
            ))
        }
    };
    Ok(RawRecord {
        id,
        embedding,
        document,
        uri,
        metadata,
    })
}

fn json_string(map: &mut Map<String, Value>, field: &str) -> Result<Option<String>, Rejection> {
    match map.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(Rejection::field(
            field,
            format!("{field} must be a string or null, got {}", show(&other)),
        )),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::ingest::fixtures::jsonl;
    use crate::ingest::parse::tests::{meta, read, read_err, record};
    use crate::ingest::parse::Format;
    use crate::model::MetadataValue;

    #[test]
    fn jsonl_reads_every_field_and_skips_blank_lines() {
        let text = concat!(
            "{\"id\": \"a\", \"embedding\": [1, 2.5]}\n",
            "\n",
            "   \r\n",
            "{\"id\": \"b\", \"embedding\": [0.5, -1], \"document\": \"doc\", \"uri\": \"s3://x\", ",
            "\"metadata\": {\"s\": \"v\", \"i\": 3, \"f\": 1.5, \"b\": true, \"l\": [1, 2], \"gone\": null}}\r\n",
            "{\"id\": \"c\", \"embedding\": [0, 0], \"document\": null, \"uri\": null, \"metadata\": null}"
        );
        let records = read(Format::Jsonl, Bytes::from(text)).unwrap();
        let b = RawRecord {
            document: Some("doc".into()),
            uri: Some("s3://x".into()),
            metadata: meta(&[
                ("s", Some(MetadataValue::Str("v".into()))),
                ("i", Some(MetadataValue::Int(3))),
                ("f", Some(MetadataValue::Float(1.5))),
                ("b", Some(MetadataValue::Bool(true))),
                ("l", Some(MetadataValue::IntArray(vec![1, 2]))),
                ("gone", None),
            ]),
            ..record("b", &[0.5, -1.0])
        };
        assert_eq!(
            records,
            vec![
                (Location::Line(1), record("a", &[1.0, 2.5])),
                (Location::Line(4), b),
                (Location::Line(5), record("c", &[0.0, 0.0])),
            ]
        );
        assert_eq!(read(Format::Jsonl, Bytes::new()).unwrap(), vec![]);
    }

    #[test]
    fn jsonl_errors_name_the_line_and_field() {
        let ok = json!({"id": "a", "embedding": [1.0]});
        let cases: Vec<(Value, Option<&str>, &str)> = vec![
            (json!({"embedding": [1.0]}), Some("id"), "id is required"),
            (
                json!({"id": 7, "embedding": [1.0]}),
                Some("id"),
                "id must be a string, got 7",
            ),
            (
                json!({"id": "b"}),
                Some("embedding"),
                "embedding is required",
            ),
            (
                json!({"id": "b", "embedding": null}),
                Some("embedding"),
                "embedding is required",
            ),
            (
                json!({"id": "b", "embedding": "1,2"}),
                Some("embedding"),
                "must be an array of numbers",
            ),
            (
                json!({"id": "b", "embedding": [1.0, "x"]}),
                Some("embedding"),
                "embedding element 1 must be a number",
            ),
            (
                json!({"id": "b", "embedding": [1.0], "document": 3}),
                Some("document"),
                "document must be a string or null",
            ),
            (
                json!({"id": "b", "embedding": [1.0], "uri": []}),
                Some("uri"),
                "uri must be a string or null",
            ),
            (
                json!({"id": "b", "embedding": [1.0], "metadata": [1]}),
                Some("metadata"),
                "metadata must be an object or null",
            ),
            (
                json!({"id": "b", "embedding": [1.0], "metadata": {"k": {"x": 1}}}),
                Some("metadata"),
                "got an object",
            ),
            (
                json!({"id": "b", "embedding": [1.0], "metadata": {"$k": 1}}),
                Some("metadata"),
                "cannot start with",
            ),
            (
                json!({"id": "b", "embedding": [1.0], "embeddings": [1.0]}),
                Some("embeddings"),
                "unknown field embeddings",
            ),
            (json!(["b"]), None, "expected a JSON object"),
        ];
        for (bad, field, reason) in cases {
            let file = jsonl(&[ok.clone(), bad.clone()]);
            let r = read_err(Format::Jsonl, file);
            assert_eq!(r.location, Some(Location::Line(2)), "{bad}: {r}");
            assert_eq!(r.field.as_deref(), field, "{bad}: {r}");
            assert!(r.reason.contains(reason), "{bad}: {r}");
        }
        let r = read_err(
            Format::Jsonl,
            Bytes::from("\n{\"id\": \"a\", \"embedding\": [1]\n"),
        );
        assert_eq!(r.location, Some(Location::Line(2)));
        assert!(r.reason.starts_with("invalid JSON"), "{r}");
        let r = read_err(Format::Jsonl, Bytes::from(&b"{\"id\": \"\xff\"}"[..]));
        assert_eq!(r.location, Some(Location::Line(1)));
        assert!(r.reason.contains("UTF-8"), "{r}");
    }
}
