//! Catalog records and encrypted objects: arbitrary bytes as a collection `Manifest` and
//! an `ApiKeyRecord` (JSON, as the catalogs store them), as a wrapped data key, and as
//! an envelope decrypted whole and by ranges with a fixed key.
//!
//! Errors are fine, panics are not. A decoded manifest or key record re-serializes to
//! itself and its derived values (keys, grants, row filter, wrapped key) are usable. An
//! envelope that does not authenticate fails with `Internal`; one that does (only the
//! seeds, in practice) yields the plaintext length its header and size announce, and
//! every ranged read of it returns the matching slice of the whole plaintext.
#![no_main]

use chroma_core::auth::rows::RowFilter;
use chroma_core::auth::grants::Grant;
use chroma_core::auth::api_keys::PresentedKey;
use chroma_core::catalog::{ApiKeyRecord, Manifest};
use chroma_core::crypto::envelope::{self, ciphertext_range, decrypt_range, EnvelopeHeader};
use chroma_core::crypto::KeyProvider;
use chroma_core::ErrorCode;
use chroma_fuzz::{context, data_key, key_provider, ENVELOPE_AAD};
use futures::executor::block_on;
use libfuzzer_sys::fuzz_target;

/// A well-formed API key whose secret matches no seed.
const PRESENTED: &str = "ck0123456789abcdef.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

fuzz_target!(|data: &[u8]| {
    let provider = key_provider();
    if let Ok(m) = serde_json::from_slice::<Manifest>(data) {
        let json = serde_json::to_vec(&m).expect("a manifest serializes");
        let back: Manifest = serde_json::from_slice(&json).expect("a manifest reads back");
        assert_eq!(back, m);
        assert!(m.referenced_keys().count() >= m.log.len() + 2 * m.segments.len());
        m.unindexed_ops();
        let _ = block_on(provider.unwrap_data_key(&m.wrapped_key, &context()));
    }
    if let Ok(k) = serde_json::from_slice::<ApiKeyRecord>(data) {
        let json = serde_json::to_vec(&k).expect("a key record serializes");
        let back: ApiKeyRecord = serde_json::from_slice(&json).expect("a key record reads back");
        assert_eq!(back, k);
        for g in &k.grants {
            let _ = Grant::parse(g);
        }
        let _ = k.row_filter.as_ref().map(RowFilter::parse);
        let presented = PresentedKey::parse(PRESENTED).expect("a well-formed key");
        assert!(!presented.matches(&k));
    }
    let _ = block_on(provider.unwrap_data_key(data, &context()));
    envelope(data);
});

fn envelope(data: &[u8]) {
    let key = data_key();
    let whole = match envelope::decrypt(&key, ENVELOPE_AAD, data) {
        Ok(p) => Some(p),
        Err(e) => {
            assert_eq!(e.code(), ErrorCode::Internal, "{e}");
            None
        }
    };
    let Ok(header) = EnvelopeHeader::parse(data) else {
        assert!(whole.is_none());
        return;
    };
    let len = data.len() as u64;
    let Ok(plaintext_len) = header.plaintext_len(len) else {
        assert!(whole.is_none());
        return;
    };
    if let Some(p) = &whole {
        assert_eq!(p.len() as u64, plaintext_len);
    }
    let third = plaintext_len / 3;
    for range in [
        0..1,
        third..2 * third + 1,
        plaintext_len.saturating_sub(1)..u64::MAX,
        0..u64::MAX,
    ] {
        let Ok(plan) = ciphertext_range(&header, len, range.clone()) else {
            assert!(range.start > plaintext_len, "{range:?} of {plaintext_len}");
            continue;
        };
        let (start, end) = (plan.ciphertext.start, plan.ciphertext.end);
        assert!(start <= end && end <= len, "{plan:?} of {len} bytes");
        let chunks = &data[start as usize..end as usize];
        match decrypt_range(&key, ENVELOPE_AAD, &header, &plan, chunks) {
            Ok(p) => {
                assert_eq!(p.len() as u64, plan.plaintext.end - plan.plaintext.start);
                if let Some(w) = &whole {
                    assert_eq!(
                        p,
                        w[plan.plaintext.start as usize..plan.plaintext.end as usize]
                    );
                }
            }
            Err(e) => assert!(whole.is_none(), "{plan:?}: {e}"),
        }
    }
}
