//! Which API keys a principal may mint, list and revoke: never more than it has itself.
//!
//! - **Grants**: every grant of a new key lies within one of the minter's *admin* grants
//!   (`acme/*/*:read,write,admin` may mint `acme/prod/*:read`, not `*/*/*:read`).
//! - **Rows**: a minter limited to some rows passes its limit on: the new key's row
//!   filter is the minter's, ANDed with the one asked for (if any). A key never sees or
//!   changes a record its minter could not.
//! - **Listing and revoking**: only keys the principal could have minted — grants within
//!   its admin grants and, for a row-limited principal, a row filter that is its own or
//!   its own ANDed with more.
//!
//! The HTTP API (`POST /api/v2/admin/keys`) and `chroma keys create` (as the operator,
//! [`Principal::local`]) mint through [`Principal::mint_key`] alike.

use serde_json::Value;

use super::api_keys::{mint, NewKey};
use super::grants::{Action, Grant};
use super::rows::RowFilter;
use super::Principal;
use crate::catalog::ApiKeyRecord;
use crate::error::{Error, ErrorCode, Result};

/// The most grants one key may carry.
pub const MAX_GRANTS: usize = 64;
/// The longest key name, in characters.
pub const MAX_NAME_CHARS: usize = 128;

/// A key as asked for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyRequest {
    /// `tenant/database/collection:actions` strings.
    pub grants: Vec<String>,
    pub name: Option<String>,
    /// A `where` document limiting the records the key sees and changes.
    pub row_filter: Option<Value>,
    /// Milliseconds since the epoch after which the key stops working.
    pub expires_at_ms: Option<u64>,
}

/// Parses and checks the grants of a new key.
pub fn parse_grants(grants: &[String]) -> Result<Vec<Grant>> {
    if grants.is_empty() {
        return Err(Error::invalid(
            "grants: a key needs at least one grant, e.g. 'acme/*/*:read'",
        ));
    }
    if grants.len() > MAX_GRANTS {
        return Err(Error::invalid(format!(
            "grants: at most {MAX_GRANTS} grants per key, got {}",
            grants.len()
        )));
    }
    grants.iter().map(|g| Grant::parse(g)).collect()
}

impl Principal {
    /// Whether some grant of this principal has the admin action (anywhere).
    pub fn is_admin_somewhere(&self) -> bool {
        self.grants.iter().any(|g| g.allows_action(Action::Admin))
    }

    fn require_admin_somewhere(&self) -> Result<()> {
        if self.is_admin_somewhere() {
            Ok(())
        } else {
            Err(Error::new(
                ErrorCode::PermissionDenied,
                "managing keys needs the admin action",
            ))
        }
    }

    /// Mints a key within this principal's reach (see the module documentation) at
    /// `now_ms`. Errors: `PermissionDenied` without an admin grant or for grants beyond
    /// this principal's; `InvalidArgument` for bad grants, name, row filter or expiry.
    pub fn mint_key(&self, request: KeyRequest, now_ms: u64) -> Result<NewKey> {
        self.require_admin_somewhere()?;
        let grants = parse_grants(&request.grants)?;
        if !self.may_delegate(&grants) {
            return Err(Error::new(
                ErrorCode::PermissionDenied,
                "grants: a key can only be given grants within the caller's own admin grants",
            ));
        }
        if let Some(name) = &request.name {
            if name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
                return Err(Error::invalid(format!(
                    "name: at most {MAX_NAME_CHARS} characters, no control characters"
                )));
            }
        }
        if let Some(at) = request.expires_at_ms {
            if at <= now_ms {
                return Err(Error::invalid(format!(
                    "expires_at_ms: {at} is not in the future"
                )));
            }
        }
        let asked = request
            .row_filter
            .as_ref()
            .map(RowFilter::parse)
            .transpose()?;
        let row_filter = match (&self.row_filter, asked) {
            (None, asked) => asked,
            (Some(own), None) => Some(own.clone()),
            (Some(own), Some(asked)) => Some(own.and(&asked)),
        };
        Ok(mint(
            request.name,
            grants.iter().map(ToString::to_string).collect(),
            row_filter.map(|f| f.to_json()),
            now_ms,
            request.expires_at_ms,
        ))
    }

    /// Whether this principal may see and revoke `record`: one it could have minted.
    pub fn may_manage(&self, record: &ApiKeyRecord) -> bool {
        if !self.is_admin_somewhere() {
            return false;
        }
        let grants_within = record
            .grants
            .iter()
            .map(|g| Grant::parse(g))
            .collect::<Result<Vec<_>>>()
            .is_ok_and(|grants| self.may_delegate(&grants));
        let rows_within = match &self.row_filter {
            None => true,
            Some(own) => record
                .row_filter
                .as_ref()
                .is_some_and(|theirs| own.is_narrowed_by(theirs)),
        };
        grants_within && rows_within
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn principal(grants: &[&str], row_filter: Option<Value>) -> Principal {
        Principal {
            id: "key:test".into(),
            grants: grants.iter().map(|g| Grant::parse(g).unwrap()).collect(),
            row_filter: row_filter.map(|f| RowFilter::parse(&f).unwrap()),
        }
    }

    fn ask(grants: &[&str], row_filter: Option<Value>) -> KeyRequest {
        KeyRequest {
            grants: grants.iter().map(|g| g.to_string()).collect(),
            row_filter,
            ..KeyRequest::default()
        }
    }

    #[test]
    fn grants_stay_within_the_minters_admin_grants() {
        let p = principal(&["acme/*/*:read,write,admin", "*/*/*:read"], None);
        assert!(p
            .mint_key(ask(&["acme/prod/*:read,write"], None), 1)
            .is_ok());
        let e = p.mint_key(ask(&["*/*/*:read"], None), 1).unwrap_err();
        assert_eq!(e.code(), ErrorCode::PermissionDenied);
        let reader = principal(&["*/*/*:read,write"], None);
        let e = reader
            .mint_key(ask(&["acme/*/*:read"], None), 1)
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::PermissionDenied);
        assert!(e.message().contains("admin"), "{e}");
    }

    #[test]
    fn a_row_limited_minter_passes_its_limit_on() {
        let own = json!({"owner": "alice"});
        let p = principal(&["tenant_a/*/*:read,write,admin"], Some(own.clone()));
        // Asking for no filter gets the minter's.
        let k = p
            .mint_key(ask(&["tenant_a/*/*:read,write,admin"], None), 1)
            .unwrap();
        assert_eq!(k.record.row_filter, Some(own.clone()));
        // Asking for another one gets both.
        let more = json!({"team": "x"});
        let k = p
            .mint_key(ask(&["tenant_a/*/*:read"], Some(more.clone())), 1)
            .unwrap();
        assert_eq!(
            k.record.row_filter,
            Some(json!({"$and": [own.clone(), more.clone()]}))
        );
        let both = RowFilter::parse(k.record.row_filter.as_ref().unwrap()).unwrap();
        let record = |owner: &str, team: &str| crate::model::Record {
            id: "r".into(),
            embedding: vec![],
            document: None,
            uri: None,
            metadata: Some(
                [
                    (
                        "owner".to_owned(),
                        crate::model::MetadataValue::Str(owner.into()),
                    ),
                    (
                        "team".to_owned(),
                        crate::model::MetadataValue::Str(team.into()),
                    ),
                ]
                .into(),
            ),
        };
        assert!(both.admits(&record("alice", "x")));
        assert!(!both.admits(&record("bob", "x")));
        assert!(!both.admits(&record("alice", "y")));
    }

    #[test]
    fn only_keys_it_could_have_minted_are_manageable() {
        let own = json!({"owner": "alice"});
        let limited = principal(&["tenant_a/*/*:read,write,admin"], Some(own.clone()));
        let unlimited = principal(&["tenant_a/*/*:read,write,admin"], None);
        let minted = limited
            .mint_key(ask(&["tenant_a/db/*:read"], Some(json!({"x": 1}))), 1)
            .unwrap();
        assert!(limited.may_manage(&minted.record));
        assert!(unlimited.may_manage(&minted.record));
        let wide = unlimited
            .mint_key(ask(&["tenant_a/db/*:read"], None), 1)
            .unwrap();
        assert!(unlimited.may_manage(&wide.record));
        assert!(
            !limited.may_manage(&wide.record),
            "a wider key is not the limited admin's"
        );
        let other_rows = unlimited
            .mint_key(
                ask(&["tenant_a/db/*:read"], Some(json!({"owner": "bob"}))),
                1,
            )
            .unwrap();
        assert!(!limited.may_manage(&other_rows.record));
    }

    #[test]
    fn bad_requests_name_the_field() {
        let p = Principal::local();
        for (request, field) in [
            (ask(&[], None), "grants"),
            (ask(&["nonsense"], None), "grant"),
            (
                ask(&["*/*/*:read"], Some(json!({"a": {"$bogus": 1}}))),
                "row_filter",
            ),
            (
                KeyRequest {
                    name: Some("x".repeat(MAX_NAME_CHARS + 1)),
                    ..ask(&["*/*/*:read"], None)
                },
                "name",
            ),
            (
                KeyRequest {
                    expires_at_ms: Some(5),
                    ..ask(&["*/*/*:read"], None)
                },
                "expires_at_ms",
            ),
        ] {
            let e = p.mint_key(request, 10).unwrap_err();
            assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e}");
            assert!(e.message().contains(field), "{field}: {e}");
        }
    }
}
