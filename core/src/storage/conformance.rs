//! The conformance suite every [`ObjectStore`] implementation must pass.
//!
//! Built for tests of this crate and, with the `testing` feature, of other crates (the
//! S3 store runs it against an emulator). Everything it writes is under a fresh
//! `conformance/{ulid}/` prefix and deleted at the end, so it can share a bucket.

use bytes::Bytes;
use futures::future::join_all;

use super::ObjectStore;
use crate::error::{ErrorCode, Result};

/// Runs every check of the [`ObjectStore`] contract; panics on the first violation.
pub async fn suite(store: &dyn ObjectStore) {
    let p = format!("conformance/{}/", ulid::Ulid::new());
    put_get_overwrite(store, &p).await;
    ranged_gets(store, &p).await;
    head(store, &p).await;
    versions(store, &p).await;
    put_if_absent(store, &p).await;
    concurrent_put_if_absent(store, &p).await;
    concurrent_overwrites(store, &p).await;
    delete(store, &p).await;
    list(store, &p).await;
    missing_keys(store, &p).await;
    empty_object(store, &p).await;

    for meta in store.list(&p).await.expect("final list") {
        store.delete(&meta.key).await.expect("cleanup delete");
    }
    assert!(store.list(&p).await.expect("list after cleanup").is_empty());
}

#[track_caller]
fn assert_code<T: std::fmt::Debug>(result: Result<T>, code: ErrorCode, what: &str) {
    match result {
        Ok(v) => panic!("{what}: expected {code:?}, got Ok({v:?})"),
        Err(e) => assert_eq!(e.code(), code, "{what}: wrong error code: {e:?}"),
    }
}

fn pattern(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into()
}

async fn put_get_overwrite(store: &dyn ObjectStore, p: &str) {
    let key = format!("{p}basic/object.bin");
    let first = pattern(1000, 1);
    store.put(&key, first.clone()).await.expect("put");
    assert_eq!(store.get(&key).await.expect("get"), first);

    let second = pattern(10, 2);
    store.put(&key, second.clone()).await.expect("overwrite");
    assert_eq!(store.get(&key).await.expect("get after overwrite"), second);

    // Binary payloads survive unchanged, including every byte value.
    let all: Bytes = (0..=255u8).cycle().take(1024).collect::<Vec<u8>>().into();
    let key2 = format!("{p}basic/all-bytes");
    store.put(&key2, all.clone()).await.expect("put all bytes");
    assert_eq!(store.get(&key2).await.expect("get all bytes"), all);
}

async fn ranged_gets(store: &dyn ObjectStore, p: &str) {
    let key = format!("{p}range/object");
    let data = pattern(100, 3);
    store.put(&key, data.clone()).await.expect("put");

    for (start, end) in [
        (0, 100),
        (0, 1),
        (10, 20),
        (99, 100),
        (50, 51),
        (0, 0),
        (30, 30),
    ] {
        let got = store.get_range(&key, start..end).await.expect("get_range");
        assert_eq!(
            got,
            data.slice(start as usize..end as usize),
            "range {start}..{end}"
        );
    }
    // Clamped to the end.
    let got = store
        .get_range(&key, 90..1000)
        .await
        .expect("clamped range");
    assert_eq!(got, data.slice(90..));
    let got = store
        .get_range(&key, 0..u64::MAX)
        .await
        .expect("open-ended range");
    assert_eq!(got, data);
    // Starting exactly at the end is empty, not an error.
    let got = store
        .get_range(&key, 100..200)
        .await
        .expect("range at the end");
    assert!(got.is_empty());
    // Starting past the end is an error.
    assert_code(
        store.get_range(&key, 101..200).await,
        ErrorCode::InvalidArgument,
        "range past the end",
    );
    // Many ranges at once: each as get_range returns it, in the order asked.
    let ranges = [90..1000, 0..1, 10..20, 100..200, 10..20, 55..60];
    let got = store.get_ranges(&key, &ranges).await.expect("get_ranges");
    assert_eq!(got.len(), ranges.len());
    for (r, bytes) in ranges.iter().zip(&got) {
        let end = r.end.min(100) as usize;
        assert_eq!(
            *bytes,
            data.slice(r.start as usize..end.max(r.start as usize)),
            "{r:?}"
        );
    }
    assert!(store
        .get_ranges(&key, &[])
        .await
        .expect("no ranges")
        .is_empty());
    assert_code(
        store.get_ranges(&key, &[0..1, 101..200]).await,
        ErrorCode::InvalidArgument,
        "one range past the end",
    );
    assert_code(
        store
            .get_ranges(&format!("{key}-missing"), &[0..1, 1..2])
            .await,
        ErrorCode::NotFound,
        "ranges of a missing key",
    );
    assert_code(
        store.get_range(&key, 1000..2000).await,
        ErrorCode::InvalidArgument,
        "range far past the end",
    );
}

async fn head(store: &dyn ObjectStore, p: &str) {
    let key = format!("{p}head/object");
    let before = std::time::SystemTime::now() - std::time::Duration::from_secs(300);
    store.put(&key, pattern(321, 4)).await.expect("put");
    let meta = store.head(&key).await.expect("head");
    assert_eq!(meta.key, key);
    assert_eq!(meta.size, 321);
    assert!(meta.last_modified > before, "last_modified is recent");
}

async fn versions(store: &dyn ObjectStore, p: &str) {
    let key = format!("{p}version/object");
    store.put(&key, pattern(40, 9)).await.expect("put");
    let first = store.head(&key).await.expect("head").etag;
    assert!(!first.is_empty(), "an etag");
    let listed = store.list(&format!("{p}version/")).await.expect("list");
    assert_eq!(listed[0].etag, first, "list and head agree");
    assert_eq!(
        store
            .get_version(&key, &first)
            .await
            .expect("current version"),
        pattern(40, 9)
    );
    // S3 quotes its etags; both forms name the same version.
    assert_eq!(
        store
            .get_version(&key, &format!("\"{first}\""))
            .await
            .expect("quoted etag"),
        pattern(40, 9)
    );
    // Written again: a new version, and the old one is gone.
    store.put(&key, pattern(41, 9)).await.expect("overwrite");
    let second = store.head(&key).await.expect("head").etag;
    assert_ne!(second, first);
    assert_code(
        store.get_version(&key, &first).await,
        ErrorCode::NotFound,
        "replaced version",
    );
    assert_eq!(
        store.get_version(&key, &second).await.expect("new version"),
        pattern(41, 9)
    );
    store.delete(&key).await.expect("delete");
    assert_code(
        store.get_version(&key, &second).await,
        ErrorCode::NotFound,
        "deleted object",
    );
}

async fn put_if_absent(store: &dyn ObjectStore, p: &str) {
    let key = format!("{p}pia/object");
    let first = pattern(64, 5);
    store
        .put_if_absent(&key, first.clone())
        .await
        .expect("first put_if_absent");
    assert_code(
        store.put_if_absent(&key, pattern(64, 6)).await,
        ErrorCode::AlreadyExists,
        "second put_if_absent",
    );
    assert_eq!(
        store.get(&key).await.expect("get"),
        first,
        "content unchanged"
    );

    // Also refused when the existing object came from a plain put.
    let key2 = format!("{p}pia/after-put");
    store.put(&key2, first.clone()).await.expect("put");
    assert_code(
        store.put_if_absent(&key2, pattern(3, 7)).await,
        ErrorCode::AlreadyExists,
        "put_if_absent over put",
    );
    assert_eq!(store.get(&key2).await.expect("get"), first);

    // After a delete the key is free again.
    store.delete(&key).await.expect("delete");
    let third = pattern(8, 8);
    store
        .put_if_absent(&key, third.clone())
        .await
        .expect("put_if_absent after delete");
    assert_eq!(store.get(&key).await.expect("get"), third);
}

async fn concurrent_put_if_absent(store: &dyn ObjectStore, p: &str) {
    for round in 0..3 {
        let key = format!("{p}race/object-{round}");
        let payloads: Vec<Bytes> = (0..8).map(|i| pattern(4096 + i, i as u8)).collect();
        let results = join_all(
            payloads
                .iter()
                .map(|d| store.put_if_absent(&key, d.clone())),
        )
        .await;
        let winners: Vec<usize> = results
            .iter()
            .enumerate()
            .filter(|(_, r)| r.is_ok())
            .map(|(i, _)| i)
            .collect();
        assert_eq!(
            winners.len(),
            1,
            "exactly one put_if_absent wins: {results:?}"
        );
        for r in results.into_iter().filter(|r| r.is_err()) {
            assert_code(r, ErrorCode::AlreadyExists, "losing put_if_absent");
        }
        assert_eq!(
            store.get(&key).await.expect("get"),
            payloads[winners[0]],
            "winner's bytes"
        );
    }
}

async fn concurrent_overwrites(store: &dyn ObjectStore, p: &str) {
    // Readers racing writers see one whole object, never a mix or a prefix.
    let key = format!("{p}overwrite/object");
    let payloads: Vec<Bytes> = (0..6).map(|i| pattern(64 * 1024, i as u8)).collect();
    store
        .put(&key, payloads[0].clone())
        .await
        .expect("initial put");
    let writes = join_all(payloads.iter().map(|d| store.put(&key, d.clone())));
    let reads = join_all((0..6).map(|_| store.get(&key)));
    let (writes, reads) = futures::join!(writes, reads);
    for w in writes {
        w.expect("concurrent put");
    }
    for r in reads {
        let got = r.expect("concurrent get");
        assert!(
            payloads.contains(&got),
            "read a whole object ({} bytes)",
            got.len()
        );
    }
    let last = store.get(&key).await.expect("get");
    assert!(payloads.contains(&last));
}

async fn delete(store: &dyn ObjectStore, p: &str) {
    let key = format!("{p}delete/object");
    store.put(&key, pattern(10, 9)).await.expect("put");
    store.delete(&key).await.expect("delete");
    assert_code(
        store.get(&key).await,
        ErrorCode::NotFound,
        "get after delete",
    );
    assert_code(
        store.head(&key).await,
        ErrorCode::NotFound,
        "head after delete",
    );
    store.delete(&key).await.expect("second delete is fine");
    store
        .delete(&format!("{p}delete/never-existed"))
        .await
        .expect("delete of a missing key");
    assert!(store
        .list(&format!("{p}delete/"))
        .await
        .expect("list")
        .is_empty());
}

async fn list(store: &dyn ObjectStore, p: &str) {
    let base = format!("{p}list/");
    let names = [
        "b/2",
        "a/1",
        "a/10",
        "a/2",
        "a/3/deep/er",
        "c",
        "ab",
        "a-z",
        "log/00002-x",
        "log/00001-y",
    ];
    for (i, name) in names.iter().enumerate() {
        store
            .put(&format!("{base}{name}"), pattern(i + 1, i as u8))
            .await
            .expect("put");
    }
    let keys = |metas: Vec<super::ObjectMeta>| -> Vec<String> {
        metas
            .into_iter()
            .map(|m| m.key.strip_prefix(&base).unwrap().to_owned())
            .collect()
    };

    let all = store.list(&base).await.expect("list all");
    for m in &all {
        let i = names
            .iter()
            .position(|n| format!("{base}{n}") == m.key)
            .expect("listed key");
        assert_eq!(m.size, i as u64 + 1, "size of {}", m.key);
    }
    let mut sorted: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    sorted.sort();
    assert_eq!(keys(all), sorted);

    // Directory-like prefixes and prefixes that cut a segment in half.
    assert_eq!(
        keys(store.list(&format!("{base}a/")).await.unwrap()),
        ["a/1", "a/10", "a/2", "a/3/deep/er"]
    );
    assert_eq!(
        keys(store.list(&format!("{base}a/1")).await.unwrap()),
        ["a/1", "a/10"]
    );
    assert_eq!(
        keys(store.list(&format!("{base}a")).await.unwrap()),
        ["a-z", "a/1", "a/10", "a/2", "a/3/deep/er", "ab"]
    );
    assert_eq!(
        keys(store.list(&format!("{base}log/0000")).await.unwrap()),
        ["log/00001-y", "log/00002-x"]
    );
    assert_eq!(keys(store.list(&format!("{base}c")).await.unwrap()), ["c"]);
    assert!(store.list(&format!("{base}zzz")).await.unwrap().is_empty());
    assert!(store
        .list(&format!("{base}nothing/here/"))
        .await
        .unwrap()
        .is_empty());

    // The whole-store listing includes ours, in order.
    let everything = store.list("").await.expect("list everything");
    assert!(
        everything.windows(2).all(|w| w[0].key < w[1].key),
        "sorted by key"
    );
    assert!(everything
        .iter()
        .any(|m| m.key == format!("{base}a/3/deep/er")));
}

async fn missing_keys(store: &dyn ObjectStore, p: &str) {
    let key = format!("{p}missing/object");
    assert_code(store.get(&key).await, ErrorCode::NotFound, "get missing");
    assert_code(
        store.get_range(&key, 0..10).await,
        ErrorCode::NotFound,
        "get_range missing",
    );
    assert_code(store.head(&key).await, ErrorCode::NotFound, "head missing");
    // A key that is only a prefix of other keys is not an object.
    store
        .put(&format!("{key}/child"), pattern(1, 1))
        .await
        .expect("put child");
    assert_code(
        store.get(&key).await,
        ErrorCode::NotFound,
        "get of a prefix",
    );
    assert_code(
        store.head(&key).await,
        ErrorCode::NotFound,
        "head of a prefix",
    );
}

async fn empty_object(store: &dyn ObjectStore, p: &str) {
    let key = format!("{p}empty/object");
    store.put(&key, Bytes::new()).await.expect("put empty");
    assert!(store.get(&key).await.expect("get empty").is_empty());
    assert_eq!(store.head(&key).await.expect("head empty").size, 0);
    assert!(store
        .get_range(&key, 0..10)
        .await
        .expect("range of empty")
        .is_empty());
    assert_code(
        store.get_range(&key, 1..2).await,
        ErrorCode::InvalidArgument,
        "past empty",
    );
    let listed = store.list(&format!("{p}empty/")).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].size, 0);
}
