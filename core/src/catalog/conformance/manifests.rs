//! The [`Manifests`](crate::catalog::Manifests) checks of the catalog conformance
//! suite: the compare-and-swap, alone and under concurrent commits.

use super::*;

pub(super) async fn manifests(catalog: &dyn Catalog) {
    let (tenant, db) = scope(catalog).await;
    let c = create(catalog, &tenant, &db, "m").await;
    let mut m = catalog.get_manifest(c.id).await.expect("manifest");
    assert_eq!(m.version, 1);

    m.version = 2;
    m.dimension = Some(4);
    m.next_seq = 2;
    m.log.push(crate::catalog::LogBatchRef {
        seq: 1,
        key: format!("c/{}/log/1", c.id),
        ops: 10,
        bytes: 1000,
        first_offset: 0,
    });
    catalog
        .commit_manifest(c.id, &m)
        .await
        .expect("commit version 2");
    assert_eq!(
        catalog.get_manifest(c.id).await.expect("read back"),
        m,
        "read after commit"
    );
    assert_eq!(
        catalog
            .get_collection_by_id(c.id)
            .await
            .expect("get")
            .dimension,
        Some(4)
    );

    // Stale, repeated and skipped versions all conflict and change nothing.
    for version in [2, 1, 4, 0, u64::MAX] {
        let mut stale = m.clone();
        stale.version = version;
        stale.next_seq = 99;
        let err = catalog
            .commit_manifest(c.id, &stale)
            .await
            .expect_err("must conflict");
        assert_eq!(
            err.code(),
            ErrorCode::Conflict,
            "version {version}: {err:?}"
        );
        assert!(err.is_retryable());
    }
    assert_eq!(catalog.get_manifest(c.id).await.expect("unchanged"), m);

    assert_code(
        catalog.commit_manifest(Uuid::new_v4(), &m).await,
        ErrorCode::NotFound,
        "commit to a missing collection",
    );
}

pub(super) async fn concurrent_commits(catalog: &dyn Catalog) {
    let (tenant, db) = scope(catalog).await;
    let c = create(catalog, &tenant, &db, "race").await;

    // Two commits on the same version: exactly one wins.
    for round in 0..5u64 {
        let base = catalog.get_manifest(c.id).await.expect("manifest");
        let candidates: Vec<Manifest> = (0..2u64)
            .map(|i| {
                let mut m = base.clone();
                m.version += 1;
                m.next_seq = 1000 * round + i;
                m
            })
            .collect();
        let results = join_all(candidates.iter().map(|m| catalog.commit_manifest(c.id, m))).await;
        let winners: Vec<usize> = results
            .iter()
            .enumerate()
            .filter(|(_, r)| r.is_ok())
            .map(|(i, _)| i)
            .collect();
        assert_eq!(winners.len(), 1, "exactly one commit wins: {results:?}");
        for r in results.into_iter().filter(|r| r.is_err()) {
            let err = r.unwrap_err();
            assert_eq!(err.code(), ErrorCode::Conflict, "{err:?}");
            assert!(err.is_retryable());
        }
        assert_eq!(
            catalog.get_manifest(c.id).await.expect("winner"),
            candidates[winners[0]]
        );
    }

    // Read-modify-commit loops with retries lose no update.
    let start = catalog.get_manifest(c.id).await.expect("manifest");
    let (workers, each) = (6u64, 4u64);
    let id = c.id;
    let worker = |_: u64| async move {
        for _ in 0..each {
            loop {
                let mut m = catalog.get_manifest(id).await.expect("read");
                m.version += 1;
                m.total_ops += 1;
                match catalog.commit_manifest(id, &m).await {
                    Ok(()) => break,
                    Err(e) if e.code() == ErrorCode::Conflict => continue,
                    Err(e) => panic!("commit failed: {e:?}"),
                }
            }
        }
    };
    join_all((0..workers).map(worker)).await;
    let end = catalog.get_manifest(c.id).await.expect("manifest");
    assert_eq!(end.total_ops, start.total_ops + workers * each);
    assert_eq!(end.version, start.version + workers * each);
}

/// Sixteen writers each append one log batch with a read-append-commit loop retrying on
/// `Conflict`: every version is won exactly once and no batch is lost.
pub(super) async fn concurrent_appends(catalog: &dyn Catalog) {
    let (tenant, db) = scope(catalog).await;
    let c = create(catalog, &tenant, &db, "appends").await;
    let start = catalog.get_manifest(c.id).await.expect("manifest");
    let writers = 16u64;
    let id = c.id;
    let writer = |i: u64| async move {
        loop {
            let mut m = catalog.get_manifest(id).await.expect("read");
            m.version += 1;
            m.log.push(crate::catalog::LogBatchRef {
                seq: m.next_seq,
                key: format!("c/{id}/log/writer-{i}"),
                ops: 1,
                bytes: 100,
                first_offset: m.next_offset,
            });
            m.next_seq += 1;
            m.next_offset += 1;
            m.total_ops += 1;
            match catalog.commit_manifest(id, &m).await {
                Ok(()) => return m.version,
                Err(e) if e.code() == ErrorCode::Conflict => continue,
                Err(e) => panic!("commit failed: {e:?}"),
            }
        }
    };
    let mut won: Vec<u64> = join_all((0..writers).map(writer)).await;
    won.sort_unstable();
    let expected: Vec<u64> = (start.version + 1..=start.version + writers).collect();
    assert_eq!(won, expected, "each version won by exactly one writer");
    let end = catalog.get_manifest(c.id).await.expect("manifest");
    assert_eq!(end.version, start.version + writers);
    let mut keys: Vec<String> = end.log.iter().map(|l| l.key.clone()).collect();
    keys.sort();
    let mut want: Vec<String> = (0..writers)
        .map(|i| format!("c/{id}/log/writer-{i}"))
        .collect();
    want.sort();
    assert_eq!(keys, want, "every batch is in the final manifest");
    let seqs: Vec<u64> = end.log.iter().map(|l| l.seq).collect();
    assert_eq!(
        seqs,
        (start.next_seq..start.next_seq + writers).collect::<Vec<_>>(),
        "batches in sequence order"
    );
}
