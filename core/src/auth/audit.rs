//! The audit log: one record per authentication failure, authorization denial, refused
//! data key and change of keys, databases or collections, on the `audit` tracing target.
//!
//! Every record has the same fields: `event`, `principal` (`key:{id}`, `jwt:{subject}`,
//! `local`, or empty when nobody was authenticated), `tenant`, `action`, `resource`
//! (`tenant[/database[/collection]]` or a key id), `outcome` (`allowed` or `denied`) and
//! `request_id` ([`crate::request`]). Never a secret, key, token, document or embedding.

use super::grants::Action;
use super::resource_name;

/// A request the principal was not granted.
pub fn denied(
    principal: &str,
    action: Action,
    tenant: &str,
    database: Option<&str>,
    collection: Option<&str>,
) {
    let resource = resource_name(tenant, database, collection);
    tracing::warn!(
        target: "audit",
        event = "authorization_denied",
        principal,
        tenant,
        action = action.as_str(),
        resource,
        outcome = "denied",
        request_id = %crate::request::current_id(),
    );
}

/// A change the principal made (collection created, key revoked, …).
pub fn changed(principal: &str, event: &str, action: Action, tenant: &str, resource: &str) {
    tracing::info!(
        target: "audit",
        event,
        principal,
        tenant,
        action = action.as_str(),
        resource,
        outcome = "allowed",
        request_id = %crate::request::current_id(),
    );
}

/// A request with missing or bad credentials; `path` is what was asked for.
pub fn unauthenticated(tenant: &str, path: &str) {
    tracing::warn!(
        target: "audit",
        event = "authentication_failed",
        principal = "",
        tenant,
        action = "authenticate",
        resource = path,
        outcome = "denied",
        request_id = %crate::request::current_id(),
    );
}

/// The key provider refused to unwrap a collection's data key.
pub fn data_key_refused(tenant: &str, database: &str, collection: &str) {
    let resource = resource_name(tenant, Some(database), Some(collection));
    tracing::warn!(
        target: "audit",
        event = "data_key_refused",
        principal = "",
        tenant,
        action = "unwrap_data_key",
        resource,
        outcome = "denied",
        request_id = %crate::request::current_id(),
    );
}
