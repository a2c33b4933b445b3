//! The [`ApiKeys`](crate::catalog::ApiKeys) checks of the catalog conformance suite.

use super::*;

/// API keys: unique ids, exact round trip, listing order, revocation kept once set,
/// and `reset` does not touch them (checked in [`reset`]).
pub(super) async fn api_keys(catalog: &dyn Catalog) {
    let first = unique("ck");
    let second = unique("ck");
    let a = api_key(&first, 1_000);
    let mut b = api_key(&second, 2_000);
    b.name = None;
    b.row_filter = None;
    b.expires_at_ms = None;
    catalog.create_api_key(&a).await.expect("create key");
    catalog.create_api_key(&b).await.expect("create second key");
    let mut taken = api_key(&first, 3_000);
    taken.digest = vec![1; 32];
    assert_code(
        catalog.create_api_key(&taken).await,
        ErrorCode::AlreadyExists,
        "api key id taken",
    );
    assert_eq!(catalog.get_api_key(&first).await.unwrap(), a, "unchanged");
    assert_eq!(catalog.get_api_key(&second).await.unwrap(), b);
    assert_code(
        catalog.get_api_key(&unique("ck")).await,
        ErrorCode::NotFound,
        "missing api key",
    );
    let listed: Vec<String> = catalog
        .list_api_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.id)
        .filter(|id| *id == first || *id == second)
        .collect();
    assert_eq!(listed, [first.clone(), second.clone()], "oldest first");

    let revoked = catalog.revoke_api_key(&first, 5_000).await.unwrap();
    assert_eq!(revoked.revoked_at_ms, Some(5_000));
    let again = catalog.revoke_api_key(&first, 9_000).await.unwrap();
    assert_eq!(
        again.revoked_at_ms,
        Some(5_000),
        "first revocation time kept"
    );
    assert_eq!(
        catalog.get_api_key(&first).await.unwrap().revoked_at_ms,
        Some(5_000)
    );
    assert_eq!(
        catalog.get_api_key(&second).await.unwrap().revoked_at_ms,
        None
    );
    assert_code(
        catalog.revoke_api_key(&unique("ck"), 1).await,
        ErrorCode::NotFound,
        "revoke missing api key",
    );
}
