//! What the server measures, and where it goes.
//!
//! The engine and the API record through the `metrics` facade, with the names and labels
//! below; what receives them is the process's choice. The local server installs a
//! Prometheus recorder ([`install_prometheus`]) and serves its text at `GET /metrics`;
//! the Lambda functions install a CloudWatch Embedded Metric Format recorder and write
//! its records to their log after each invocation (`functions::lambda::metrics`). A
//! process that installs neither records nothing (the facade's default is a no-op).
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `chroma_http_requests_total` | counter | `method`, `route`, `status` | requests answered |
//! | `chroma_http_request_duration_seconds` | histogram | `method`, `route` | time to answer |
//! | `chroma_read_duration_seconds` | histogram | `op` (`get`, `query`, `search`, `count`) | a read in the engine |
//! | `chroma_read_rows_total` | counter | `op` | rows a read returned |
//! | `chroma_segments_searched` | histogram | – | segments a query or search read |
//! | `chroma_storage_requests_total` | counter | `op` (`get`, `get_range`, `head`, `put`, `delete`, `list`) | object store requests |
//! | `chroma_storage_read_bytes_total` | counter | – | bytes read from the object store |
//! | `chroma_storage_written_bytes_total` | counter | – | bytes written to it |
//! | `chroma_cache_hits_total`, `chroma_cache_misses_total` | counter | `cache` (`memory`, `disk`) | lookups of decoded objects (memory) and raw objects (the Lambda `/tmp` cache) |
//! | `chroma_unindexed_ops` | gauge | `collection` | operations in the collection's log after its last write or compaction |
//! | `chroma_compaction_duration_seconds` | histogram | – | one compaction (fold and merge) |
//! | `chroma_compactions_total` | counter | `outcome` (`ok`, `failed`) | compactions |
//! | `chroma_ingest_files_total` | counter | `outcome` (`accepted`, `rejected`) | bulk ingest files |
//! | `chroma_throttled_requests_total` | counter | – | requests refused by the per-key rate limit |
//! | `chroma_reads_ahead_total` | counter | `outcome` (`used`, `dropped`) | queries searched while the catalog was read (`engine::read_ahead`), by whether the catalog confirmed what they searched |

#[cfg(feature = "prometheus")]
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use metrics::{counter, gauge, histogram, Unit};
#[cfg(feature = "prometheus")]
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use uuid::Uuid;

pub const HTTP_REQUESTS: &str = "chroma_http_requests_total";
pub const HTTP_REQUEST_DURATION: &str = "chroma_http_request_duration_seconds";
pub const READ_DURATION: &str = "chroma_read_duration_seconds";
pub const READ_ROWS: &str = "chroma_read_rows_total";
pub const SEGMENTS_SEARCHED: &str = "chroma_segments_searched";
pub const STORAGE_REQUESTS: &str = "chroma_storage_requests_total";
pub const STORAGE_READ_BYTES: &str = "chroma_storage_read_bytes_total";
pub const STORAGE_WRITTEN_BYTES: &str = "chroma_storage_written_bytes_total";
pub const CACHE_HITS: &str = "chroma_cache_hits_total";
pub const CACHE_MISSES: &str = "chroma_cache_misses_total";
pub const UNINDEXED_OPS: &str = "chroma_unindexed_ops";
pub const COMPACTION_DURATION: &str = "chroma_compaction_duration_seconds";
pub const COMPACTIONS: &str = "chroma_compactions_total";
pub const INGEST_FILES: &str = "chroma_ingest_files_total";
pub const THROTTLED_REQUESTS: &str = "chroma_throttled_requests_total";
pub const READS_AHEAD: &str = "chroma_reads_ahead_total";

/// Describes every metric (unit and help text) to the installed recorder.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(HTTP_REQUESTS, Unit::Count, "HTTP requests answered");
    describe_histogram!(
        HTTP_REQUEST_DURATION,
        Unit::Seconds,
        "Time to answer an HTTP request"
    );
    describe_histogram!(READ_DURATION, Unit::Seconds, "Time of a read in the engine");
    describe_counter!(READ_ROWS, Unit::Count, "Rows reads returned");
    describe_histogram!(
        SEGMENTS_SEARCHED,
        Unit::Count,
        "Segments a query or search read"
    );
    describe_counter!(STORAGE_REQUESTS, Unit::Count, "Object store requests");
    describe_counter!(
        STORAGE_READ_BYTES,
        Unit::Bytes,
        "Bytes read from the object store"
    );
    describe_counter!(
        STORAGE_WRITTEN_BYTES,
        Unit::Bytes,
        "Bytes written to the object store"
    );
    describe_counter!(
        CACHE_HITS,
        Unit::Count,
        "Cache lookups that found the object"
    );
    describe_counter!(CACHE_MISSES, Unit::Count, "Cache lookups that did not");
    describe_gauge!(
        UNINDEXED_OPS,
        Unit::Count,
        "Operations in a collection's log, not yet compacted"
    );
    describe_histogram!(COMPACTION_DURATION, Unit::Seconds, "Time of one compaction");
    describe_counter!(COMPACTIONS, Unit::Count, "Compactions, by outcome");
    describe_counter!(INGEST_FILES, Unit::Count, "Bulk ingest files, by outcome");
    describe_counter!(
        THROTTLED_REQUESTS,
        Unit::Count,
        "Requests refused by the per-key rate limit"
    );
    describe_counter!(
        READS_AHEAD,
        Unit::Count,
        "Queries searched while the catalog was read, by whether it confirmed them"
    );
}

#[cfg(feature = "prometheus")]
static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs a Prometheus recorder as the process's recorder (once; later calls return the
/// same handle) and keeps its histograms drained in the background. If another recorder
/// was installed first, the handle renders nothing.
#[cfg(feature = "prometheus")]
pub fn install_prometheus() -> &'static PrometheusHandle {
    PROMETHEUS.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_ok() {
            describe();
        } else {
            tracing::warn!("a metrics recorder was installed already: /metrics stays empty");
        }
        let upkeep = handle.clone();
        std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_secs(5));
                upkeep.run_upkeep();
            })
            .expect("spawn the metrics upkeep thread");
        handle
    })
}

/// The Prometheus text of every metric, if `install_prometheus` was called.
pub fn render_prometheus() -> Option<String> {
    #[cfg(feature = "prometheus")]
    return PROMETHEUS.get().map(PrometheusHandle::render);
    #[cfg(not(feature = "prometheus"))]
    None
}

/// A read of kind `op` that started at `started` and returned `rows` rows.
pub(crate) fn read_done(op: &'static str, started: Instant, rows: usize) {
    histogram!(READ_DURATION, "op" => op).record(started.elapsed().as_secs_f64());
    counter!(READ_ROWS, "op" => op).increment(rows as u64);
}

pub(crate) fn segments_searched(n: usize) {
    histogram!(SEGMENTS_SEARCHED).record(n as f64);
}

/// A lookup in `cache` (`memory` or `disk`).
pub(crate) fn cache_lookup(cache: &'static str, hit: bool) {
    if hit {
        counter!(CACHE_HITS, "cache" => cache).increment(1);
    } else {
        counter!(CACHE_MISSES, "cache" => cache).increment(1);
    }
}

/// A query that searched while the catalog was read: `used` if the catalog confirmed
/// what it searched.
pub(crate) fn read_ahead(used: bool) {
    let outcome = if used { "used" } else { "dropped" };
    counter!(READS_AHEAD, "outcome" => outcome).increment(1);
}

pub(crate) fn storage_request(op: &'static str) {
    counter!(STORAGE_REQUESTS, "op" => op).increment(1);
}

pub(crate) fn storage_read(bytes: usize) {
    counter!(STORAGE_READ_BYTES).increment(bytes as u64);
}

pub(crate) fn storage_written(bytes: usize) {
    counter!(STORAGE_WRITTEN_BYTES).increment(bytes as u64);
}

pub(crate) fn unindexed_ops(collection: Uuid, ops: u64) {
    gauge!(UNINDEXED_OPS, "collection" => collection.to_string()).set(ops as f64);
}

/// A compaction that took `took`; `ok` unless it failed (a cancelled one is not counted).
pub(crate) fn compaction_done(took: Duration, ok: bool) {
    histogram!(COMPACTION_DURATION).record(took.as_secs_f64());
    let outcome = if ok { "ok" } else { "failed" };
    counter!(COMPACTIONS, "outcome" => outcome).increment(1);
}

pub(crate) fn ingest_file(accepted: bool) {
    let outcome = if accepted { "accepted" } else { "rejected" };
    counter!(INGEST_FILES, "outcome" => outcome).increment(1);
}

pub(crate) fn throttled() {
    counter!(THROTTLED_REQUESTS).increment(1);
}

/// An HTTP request answered with `status` after `took`, on `route` (the matched route
/// template, never the raw path: ids would make every path a series of its own).
pub(crate) fn http_request(method: &str, route: &str, status: u16, took: Duration) {
    let (method, route) = (method.to_owned(), route.to_owned());
    counter!(HTTP_REQUESTS, "method" => method.clone(), "route" => route.clone(),
        "status" => status.to_string())
    .increment(1);
    histogram!(HTTP_REQUEST_DURATION, "method" => method, "route" => route)
        .record(took.as_secs_f64());
}
