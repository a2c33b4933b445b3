//! Helpers shared by the fuzz targets in `fuzz_targets/`.
//!
//! - A global allocator that aborts on any single allocation above [`MAX_ALLOCATION`]:
//!   every fuzz input is a few kilobytes, so a decoder asking for that much memory trusts
//!   a length it read from the input. (libFuzzer's own `-malloc_limit_mb` needs a
//!   sanitizer's allocator hooks, and these targets run with `--sanitizer none`.)
//! - [`decoding`] and [`contain_third_party_panics`], for the segment decoders only: the
//!   known misbehaviour of the parquet reader on corrupt files is noted, not fatal.
//! - Fixed records ([`sample_rows`]) that filters are evaluated against.
//! - [`as_index_body`], to get fuzz inputs past the index checksum.
//! - The fixed keys that the manifest target decrypts with and the corpus generator
//!   encrypts with ([`data_key`], [`key_provider`], [`context`], [`ENVELOPE_AAD`]).

use std::alloc::{GlobalAlloc, Layout, System};
use std::backtrace::Backtrace;
use std::cell::Cell;
use std::collections::HashSet;
use std::sync::Mutex;

use chroma_core::crypto::local::LocalKeyProvider;
use chroma_core::crypto::{DataKey, EncryptionContext};
use chroma_core::model::{Metadata, MetadataValue};
use uuid::Uuid;
use zeroize::Zeroizing;

/// The largest single allocation a target may make: 512 MiB.
pub const MAX_ALLOCATION: usize = 512 << 20;

/// [`System`], aborting with a backtrace on an allocation above [`MAX_ALLOCATION`].
///
/// One exception: during [`decoding`], an oversized allocation made by the parquet or
/// arrow crates themselves is let through and noted once per site. parquet 60 trusts
/// sizes read from a corrupt file (a schema node's `num_children`, a page's uncompressed
/// size) and allocates up to 16 GiB for them; see `README.md`. Mostly that is untouched
/// virtual memory, and libFuzzer's RSS limit still applies to what is touched. Oversized
/// allocations anywhere else, chroma-core included, are fatal.
pub struct CappedAlloc;

fn check_size(size: usize) {
    if size <= MAX_ALLOCATION {
        return;
    }
    // The check's own allocations are small, so this does not recurse.
    let trace = Backtrace::force_capture().to_string();
    if DECODING.try_with(Cell::get).unwrap_or(false) {
        if let Some(site) = third_party_site(&trace) {
            note_once(&site, &format!("allowed an allocation of {size} bytes"));
            return;
        }
    }
    eprintln!("fuzz: allocation of {size} bytes exceeds the {MAX_ALLOCATION}-byte cap\n{trace}");
    std::process::abort();
}

/// The source location of the innermost frame outside the standard library and this
/// file, when it is in the parquet or arrow crates.
fn third_party_site(trace: &str) -> Option<String> {
    let site = trace
        .lines()
        .filter_map(|l| l.trim().strip_prefix("at "))
        .find(|at| !at.starts_with("/rustc/") && !at.contains("tests/fuzz/src/lib.rs"))?;
    is_third_party(site).then(|| site.to_string())
}

fn is_third_party(location: &str) -> bool {
    ["/parquet-", "/arrow-"]
        .iter()
        .any(|c| location.contains(c))
}

unsafe impl GlobalAlloc for CappedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check_size(layout.size());
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check_size(layout.size());
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check_size(new_size);
        System.realloc(ptr, layout, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: CappedAlloc = CappedAlloc;

thread_local! {
    static DECODING: Cell<bool> = const { Cell::new(false) };
}

static NOTED: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// Prints `fuzz: third-party: {what} at {site}`, once per site.
fn note_once(site: &str, what: &str) {
    let mut seen = NOTED.lock().unwrap_or_else(|e| e.into_inner());
    if seen
        .get_or_insert_with(HashSet::new)
        .insert(site.to_string())
    {
        eprintln!("fuzz: third-party: {what} at {site}");
    }
}

/// Runs `f` as a segment decode: see [`CappedAlloc`] and [`contain_third_party_panics`].
pub fn decoding<T>(f: impl FnOnce() -> T) -> T {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            DECODING.with(|d| d.set(false));
        }
    }
    DECODING.with(|d| d.set(true));
    let _reset = Reset;
    f()
}

/// Lets panics raised in the parquet and arrow crates during [`decoding`] unwind instead
/// of aborting the fuzzer.
///
/// `segment::guard` turns a panic inside the parquet reader into an error by design
/// (see `core/src/segment/mod.rs`): a corrupt file fails one request, not the process.
/// libFuzzer's panic hook aborts before that `catch_unwind` is reached, so without this
/// every such panic would count as a crash. Panics anywhere else (chroma-core, the
/// standard library) and all panics outside [`decoding`] still abort. Each location is
/// noted once.
///
/// Call once, from the target's `init`.
pub fn contain_third_party_panics() {
    let fatal = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let location = info.location().map(|l| l.to_string()).unwrap_or_default();
        if DECODING.with(Cell::get) && is_third_party(&location) {
            let message = info.payload_as_str().unwrap_or("(no message)");
            note_once(&location, &format!("contained a panic ({message})"));
            return;
        }
        fatal(info);
    }));
}

/// Records (metadata, document) covering every metadata value type, a missing key, no
/// metadata and no document.
pub fn sample_rows() -> Vec<(Option<Metadata>, Option<String>)> {
    use MetadataValue::*;
    let meta = |pairs: Vec<(&str, MetadataValue)>| {
        Some(
            pairs
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect::<Metadata>(),
        )
    };
    vec![
        (
            meta(vec![
                ("a", Int(1)),
                ("b", Str("x".into())),
                ("n", Float(2.5)),
                ("flag", Bool(true)),
            ]),
            Some("Hello World".into()),
        ),
        (
            meta(vec![
                ("a", Float(1.0)),
                ("b", Str("y".into())),
                ("n", Int(-3)),
                ("flag", Bool(false)),
            ]),
            Some("hello world".into()),
        ),
        (
            meta(vec![
                ("a", Int(i64::MAX)),
                ("arr", IntArray(vec![1, 2, 3])),
                ("fs", FloatArray(vec![1.5, -0.0])),
                ("ss", StrArray(vec!["x".into(), "".into()])),
                ("bs", BoolArray(vec![true])),
                (
                    "b",
                    SparseVector(chroma_core::model::sparse::SparseVector {
                        indices: vec![1, 4],
                        values: vec![0.5, -1.0],
                        tokens: None,
                    }),
                ),
            ]),
            None,
        ),
        (meta(vec![("b", Str("".into()))]), Some(String::new())),
        (None, Some("ünïcödé ✓ $and".into())),
        (None, None),
    ]
}

/// `body` made into a well-formed HNSW index file: the magic and format version 1 in
/// front, the checksum behind (the same function as `checksum` in
/// `core/src/index/hnsw.rs`; the corpus generator checks that they agree).
pub fn as_index_body(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + body.len() + 8);
    out.extend_from_slice(b"CHRHNSW\0");
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(body);
    let sum = index_checksum(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

/// `body` made into a well-formed head of a format 2, 3 or 4 HNSW index (`version`): the
/// magic and version in front, the head length (bytes 40..48) set, zero padding to 8
/// bytes and the checksum behind.
pub fn as_index_head(version: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + body.len() + 16);
    out.extend_from_slice(b"CHRHNSW\0");
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(body);
    while out.len() % 8 != 0 {
        out.push(0);
    }
    let head_len = (out.len() + 8) as u64;
    if out.len() >= 48 {
        out[40..48].copy_from_slice(&head_len.to_le_bytes());
    }
    let sum = index_checksum(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

fn index_checksum(bytes: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h: u64 = 0xC0FF_EE00_D15E_A5E5 ^ bytes.len() as u64;
    let words = bytes.chunks_exact(8);
    let tail = words.remainder();
    for w in words {
        let w = u64::from_le_bytes(w.try_into().expect("8 bytes"));
        h = ((h ^ w).wrapping_mul(K)).rotate_left(29);
    }
    let mut last = [0u8; 8];
    last[..tail.len()].copy_from_slice(tail);
    h = ((h ^ u64::from_le_bytes(last)).wrapping_mul(K)).rotate_left(29);
    h ^ (h >> 31)
}

/// The data key of the envelope seeds.
pub fn data_key() -> DataKey {
    DataKey(Zeroizing::new([9; 32]))
}

/// The associated data (object key) of the envelope seeds.
pub const ENVELOPE_AAD: &[u8] = b"tenants/fuzz/collections/1/log/1";

/// The key provider that wrapped the manifest seeds' data keys.
pub fn key_provider() -> LocalKeyProvider {
    LocalKeyProvider::from_bytes([7; 32])
}

/// The encryption context of the manifest seeds.
pub fn context() -> EncryptionContext {
    EncryptionContext {
        tenant: "fuzz".into(),
        database: "fuzz".into(),
        collection: Uuid::from_u128(1),
    }
}
