//! Grants: actions on a `tenant/database/collection` pattern.
//!
//! A grant is written `PATTERN:ACTIONS`, e.g. `acme/*/*:read,write` or
//! `*/*/*:read,write,admin`. Each of the three pattern parts is a name or `*` (any).
//! `read` covers get, query, count and listing within the pattern; `write` adds, changes
//! and deletes records and creates, modifies and deletes collections; `admin` covers
//! tenants, databases, keys and reset.

use std::fmt;

use crate::error::{Error, Result};

/// An action a grant may allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    Read,
    Write,
    Admin,
}

impl Action {
    pub const ALL: [Action; 3] = [Action::Read, Action::Write, Action::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Write => "write",
            Action::Admin => "admin",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Action::Read => 1,
            Action::Write => 2,
            Action::Admin => 4,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One part of a pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Part {
    Any,
    Name(String),
}

impl Part {
    fn parse(s: &str, what: &str, grant: &str) -> Result<Self> {
        if s == "*" {
            return Ok(Part::Any);
        }
        if s.is_empty() || s.contains('*') || s.contains(':') || s.chars().any(char::is_control) {
            return Err(Error::invalid(format!(
                "invalid grant {grant:?}: the {what} must be a name or '*'"
            )));
        }
        Ok(Part::Name(s.to_owned()))
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            Part::Any => true,
            Part::Name(n) => n == name,
        }
    }

    /// Whether everything `other` matches, this matches too.
    fn covers(&self, other: &Part) -> bool {
        match (self, other) {
            (Part::Any, _) => true,
            (Part::Name(a), Part::Name(b)) => a == b,
            (Part::Name(_), Part::Any) => false,
        }
    }
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Part::Any => f.write_str("*"),
            Part::Name(n) => f.write_str(n),
        }
    }
}

/// Actions on a `tenant/database/collection` pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Grant {
    pub tenant: Part,
    pub database: Part,
    pub collection: Part,
    actions: u8,
}

impl Grant {
    /// Parses `tenant/database/collection:action[,action…]`.
    pub fn parse(s: &str) -> Result<Self> {
        let (pattern, actions) = s.rsplit_once(':').ok_or_else(|| {
            Error::invalid(format!(
                "invalid grant {s:?}: expected PATTERN:ACTIONS, e.g. 'acme/*/*:read,write'"
            ))
        })?;
        let parts: Vec<&str> = pattern.split('/').collect();
        let [tenant, database, collection] = parts.as_slice() else {
            return Err(Error::invalid(format!(
                "invalid grant {s:?}: the pattern must be tenant/database/collection"
            )));
        };
        let mut bits = 0u8;
        for a in actions.split(',') {
            bits |= match a.trim() {
                "read" => Action::Read.bit(),
                "write" => Action::Write.bit(),
                "admin" => Action::Admin.bit(),
                other => {
                    return Err(Error::invalid(format!(
                    "invalid grant {s:?}: unknown action {other:?} (expected read, write or admin)"
                )))
                }
            };
        }
        Ok(Self {
            tenant: Part::parse(tenant, "tenant", s)?,
            database: Part::parse(database, "database", s)?,
            collection: Part::parse(collection, "collection", s)?,
            actions: bits,
        })
    }

    pub fn allows_action(&self, action: Action) -> bool {
        self.actions & action.bit() != 0
    }

    pub fn actions(&self) -> impl Iterator<Item = Action> + '_ {
        Action::ALL.into_iter().filter(|a| self.allows_action(*a))
    }

    /// Whether this grant allows `action` on the resource. `None` parts of the resource
    /// stand for "some database/collection of it" (listing a tenant's databases, a
    /// database's collections): any grant reaching into it allows it.
    pub fn allows(
        &self,
        action: Action,
        tenant: &str,
        database: Option<&str>,
        collection: Option<&str>,
    ) -> bool {
        self.allows_action(action)
            && self.tenant.matches(tenant)
            && database.is_none_or(|d| self.database.matches(d))
            && collection.is_none_or(|c| self.collection.matches(c))
    }

    /// Whether this grant allows `action` on everything under `tenant`/`database`
    /// (`None`: under every tenant / every database): the named parts match and every
    /// part below them is `*`.
    pub fn allows_everything_under(
        &self,
        action: Action,
        tenant: Option<&str>,
        database: Option<&str>,
    ) -> bool {
        let part = |p: &Part, name: Option<&str>| match name {
            Some(n) => p.matches(n),
            None => *p == Part::Any,
        };
        self.allows_action(action)
            && part(&self.tenant, tenant)
            && part(&self.database, database.filter(|_| tenant.is_some()))
            && self.collection == Part::Any
    }

    /// Whether this grant gives nothing beyond `other` (so a holder of `other` may hand
    /// it out).
    pub fn within(&self, other: &Grant) -> bool {
        self.actions & !other.actions == 0
            && other.tenant.covers(&self.tenant)
            && other.database.covers(&self.database)
            && other.collection.covers(&self.collection)
    }
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let actions: Vec<&str> = self.actions().map(Action::as_str).collect();
        write!(
            f,
            "{}/{}/{}:{}",
            self.tenant,
            self.database,
            self.collection,
            actions.join(",")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for s in [
            "acme/*/*:read,write",
            "*/*/*:read,write,admin",
            "a/b/c:read",
        ] {
            assert_eq!(Grant::parse(s).unwrap().to_string(), s);
        }
        assert_eq!(
            Grant::parse("a/b/c:write,read").unwrap().to_string(),
            "a/b/c:read,write"
        );
        for bad in [
            "acme",
            "acme/*:read",
            "a/b/c/d:read",
            "a/b/c:",
            "a/b/c:delete",
            "a//c:read",
            "a*/b/c:read",
        ] {
            let e = Grant::parse(bad).unwrap_err();
            assert!(e.message().contains("invalid grant"), "{bad}: {e}");
        }
    }

    #[test]
    fn matches_resources() {
        let g = Grant::parse("acme/prod/*:read").unwrap();
        assert!(g.allows(Action::Read, "acme", Some("prod"), Some("docs")));
        assert!(g.allows(Action::Read, "acme", Some("prod"), None));
        assert!(g.allows(Action::Read, "acme", None, None));
        assert!(!g.allows(Action::Write, "acme", Some("prod"), Some("docs")));
        assert!(!g.allows(Action::Read, "acme", Some("dev"), Some("docs")));
        assert!(!g.allows(Action::Read, "other", Some("prod"), Some("docs")));
        let c = Grant::parse("acme/prod/docs:read,write").unwrap();
        assert!(c.allows(Action::Write, "acme", Some("prod"), Some("docs")));
        assert!(!c.allows(Action::Write, "acme", Some("prod"), Some("docs2")));
    }

    #[test]
    fn everything_under_needs_wildcards_below_the_named_parts() {
        let db = Grant::parse("acme/prod/*:read").unwrap();
        assert!(db.allows_everything_under(Action::Read, Some("acme"), Some("prod")));
        assert!(!db.allows_everything_under(Action::Read, Some("acme"), None));
        assert!(!db.allows_everything_under(Action::Write, Some("acme"), Some("prod")));
        let one = Grant::parse("acme/prod/docs:read").unwrap();
        assert!(!one.allows_everything_under(Action::Read, Some("acme"), Some("prod")));
        let root = Grant::parse("*/*/*:admin").unwrap();
        assert!(root.allows_everything_under(Action::Admin, None, None));
        assert!(!Grant::parse("acme/*/*:admin")
            .unwrap()
            .allows_everything_under(Action::Admin, None, None));
    }

    #[test]
    fn within_is_narrower_or_equal() {
        let admin = Grant::parse("acme/*/*:read,write,admin").unwrap();
        assert!(Grant::parse("acme/prod/*:read").unwrap().within(&admin));
        assert!(admin.within(&admin));
        assert!(!Grant::parse("*/*/*:read").unwrap().within(&admin));
        assert!(!Grant::parse("other/*/*:read").unwrap().within(&admin));
        let reader = Grant::parse("acme/*/*:read").unwrap();
        assert!(!Grant::parse("acme/x/*:write").unwrap().within(&reader));
    }
}
