//! Keys of files to ingest: decoding them from storage events and reading the
//! collection they name.

use percent_encoding::percent_decode_str;

use super::{Rejection, FAILED_PREFIX, INGEST_PREFIX};
use crate::error::{Error, Result};

/// Decodes an object key as S3 event notifications carry it: URL-encoded, with `+` for a
/// space and `%XX` for any other escaped byte (so a literal `+` arrives as `%2B`).
///
/// Fails with `InvalidArgument` on a `%` not followed by two hex digits, or when the
/// decoded bytes are not UTF-8.
pub fn decode_event_key(raw: &str) -> Result<String> {
    let bytes = raw.as_bytes();
    if let Some(at) = bytes.iter().enumerate().position(|(i, &b)| {
        b == b'%'
            && !bytes
                .get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    }) {
        return Err(Error::invalid(format!(
            "event key {raw:?} has a malformed escape at byte {at}: '%' must be followed by \
             two hex digits"
        )));
    }
    let spaced = raw.replace('+', " ");
    percent_decode_str(&spaced)
        .decode_utf8()
        .map(|k| k.into_owned())
        .map_err(|e| Error::invalid(format!("event key {raw:?} does not decode to UTF-8: {e}")))
}

/// A key under [`INGEST_PREFIX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IngestKey<'a> {
    /// The key without [`INGEST_PREFIX`]; never empty.
    rest: &'a str,
}

/// The collection a key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Names<'a> {
    pub tenant: &'a str,
    pub database: &'a str,
    pub collection: &'a str,
}

impl<'a> IngestKey<'a> {
    /// Fails with `InvalidArgument` for a key outside [`INGEST_PREFIX`] (or the prefix
    /// itself): such an event was misrouted and its object is left alone.
    pub fn parse(key: &'a str) -> Result<Self> {
        match key.strip_prefix(INGEST_PREFIX) {
            Some(rest) if !rest.is_empty() => Ok(Self { rest }),
            _ => Err(Error::invalid(format!(
                "key {key:?} is not a file under {INGEST_PREFIX}"
            ))),
        }
    }

    /// `{tenant}/{database}/{collection}/{file}`, each part non-empty (the file may
    /// contain further `/`).
    pub fn names(&self) -> Result<Names<'a>, Rejection> {
        let mut parts = self.rest.splitn(4, '/');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(tenant), Some(database), Some(collection), Some(file))
                if [tenant, database, collection, file]
                    .iter()
                    .all(|p| !p.is_empty()) =>
            {
                Ok(Names {
                    tenant,
                    database,
                    collection,
                })
            }
            _ => Err(Rejection::new(format!(
                "key {INGEST_PREFIX}{} does not name a file as \
                 {INGEST_PREFIX}{{tenant}}/{{database}}/{{collection}}/{{file}}",
                self.rest
            ))),
        }
    }

    /// Where the file goes when rejected.
    pub fn failed_key(&self) -> String {
        format!("{FAILED_PREFIX}{}", self.rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn plus_is_a_space_and_escapes_are_bytes() {
        let cases = [
            ("ingest/t/d/c/a+b.jsonl", "ingest/t/d/c/a b.jsonl"),
            ("ingest/t/d/c/a%2Bb.jsonl", "ingest/t/d/c/a+b.jsonl"),
            (
                "ingest/t/d/c/caf%C3%A9.parquet",
                "ingest/t/d/c/café.parquet",
            ),
            (
                "ingest/t/d/c/x%3Dy%26z%2f.jsonl",
                "ingest/t/d/c/x=y&z/.jsonl",
            ),
            ("ingest/t/d/c/100%25.jsonl", "ingest/t/d/c/100%.jsonl"),
            ("plain/key", "plain/key"),
            ("", ""),
        ];
        for (raw, decoded) in cases {
            assert_eq!(decode_event_key(raw).unwrap(), decoded, "{raw}");
        }
    }

    #[test]
    fn malformed_escapes_and_bad_utf8_are_rejected() {
        for raw in ["a%", "a%2", "a%zz", "a%2g/b", "%%41"] {
            let e = decode_event_key(raw).unwrap_err();
            assert_eq!(e.code(), ErrorCode::InvalidArgument, "{raw}");
            assert!(e.message().contains("malformed escape"), "{raw}: {e}");
        }
        let e = decode_event_key("a%C3%28").unwrap_err();
        assert!(e.message().contains("UTF-8"), "{e}");
    }

    #[test]
    fn keys_name_tenant_database_collection_and_file() {
        let key = IngestKey::parse("ingest/t1/db/docs/2024/part-0.parquet").unwrap();
        assert_eq!(
            key.names().unwrap(),
            Names {
                tenant: "t1",
                database: "db",
                collection: "docs"
            }
        );
        assert_eq!(
            key.failed_key(),
            "ingest-failed/t1/db/docs/2024/part-0.parquet"
        );
    }

    #[test]
    fn short_or_empty_parts_are_rejections() {
        for key in [
            "ingest/t/d/file.jsonl",
            "ingest/t/d/c/",
            "ingest/t//c/f.jsonl",
            "ingest/file.jsonl",
        ] {
            let r = IngestKey::parse(key).unwrap().names().unwrap_err();
            assert!(
                r.reason.contains("{tenant}/{database}/{collection}/{file}"),
                "{key}: {r}"
            );
        }
    }

    #[test]
    fn keys_outside_the_prefix_are_errors() {
        for key in [
            "ingest/",
            "ingest",
            "c/x/log/1.parquet",
            "ingest-failed/t/d/c/f.jsonl",
        ] {
            let e = IngestKey::parse(key).unwrap_err();
            assert_eq!(e.code(), ErrorCode::InvalidArgument, "{key}");
        }
    }
}
