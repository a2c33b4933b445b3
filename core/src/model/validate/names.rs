//! Names of tenants, databases and collections; record ids; embeddings.

use super::*;

/// Chroma's `validate_name`: 3–512 characters from `[a-zA-Z0-9._-]`, starting and ending
/// with `[a-zA-Z0-9]`, no `..`, not an IP address.
pub fn validate_collection_name(name: &str) -> Result<()> {
    let bytes = name.as_bytes();
    let edge_ok = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_alphanumeric());
    let shape_ok = (MIN_NAME_LEN..=MAX_NAME_LEN).contains(&bytes.len())
        && edge_ok(bytes.first())
        && edge_ok(bytes.last())
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !shape_ok {
        return Err(Error::invalid(format!(
            "Validation error: name: Expected a name containing 3-512 characters from \
             [a-zA-Z0-9._-], starting and ending with a character in [a-zA-Z0-9]. Got: {}",
            quote(name)
        )));
    }
    if name.contains("..") {
        return Err(Error::invalid(format!(
            "Validation error: name: Expected a name that does not contains two consecutive \
             periods (..). Got {name}"
        )));
    }
    if name.parse::<IpAddr>().is_ok() {
        return Err(Error::invalid(format!(
            "Validation error: name: Expected a name that is not a valid ip address. Got {name}"
        )));
    }
    Ok(())
}

/// Databases follow Chroma's collection-name rules (`validate_name`).
pub fn validate_database_name(name: &str) -> Result<()> {
    validate_collection_name(name)
}

/// Tenants: 3–512 characters (Chroma requires at least 3), no `/` (names travel in URL
/// paths) and no control characters.
pub fn validate_tenant_name(name: &str) -> Result<()> {
    let chars = name.chars().count();
    if !(MIN_NAME_LEN..=MAX_NAME_LEN).contains(&chars) {
        return Err(Error::invalid(format!(
            "Validation error: name: Expected a tenant name containing 3-512 characters. Got: {}",
            quote(name)
        )));
    }
    if name.chars().any(|c| c == '/' || c.is_control()) {
        return Err(Error::invalid(format!(
            "Validation error: name: Expected a tenant name without '/' or control characters. \
             Got: {}",
            quote(&name.escape_debug().to_string())
        )));
    }
    Ok(())
}

/// A tenant's resource name: 1–512 characters, no control characters.
pub fn validate_resource_name(name: &str) -> Result<()> {
    let chars = name.chars().count();
    if !(1..=MAX_NAME_LEN).contains(&chars) {
        return Err(Error::invalid(format!(
            "Validation error: resource_name: Expected a resource name containing 1-512 \
             characters. Got: {chars} characters"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::invalid(
            "Validation error: resource_name: Expected a resource name without control characters",
        ));
    }
    Ok(())
}

/// A record id: any non-empty UTF-8 string of at most [`MAX_ID_BYTES`] bytes.
pub fn validate_id(id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(Error::invalid(
            "Empty ID, ID must have at least one character",
        ));
    }
    check_bytes(id.len(), MAX_ID_BYTES, || format!("ID {}", quote(id)))
}

/// An embedding: 1..=[`MAX_DIMENSION`] finite values.
pub fn validate_embedding(embedding: &[f32]) -> Result<()> {
    if embedding.is_empty() {
        return Err(Error::invalid(
            "Each embedding must have at least 1 dimension",
        ));
    }
    if embedding.len() > MAX_DIMENSION {
        return Err(Error::invalid(format!(
            "embedding dimension {} exceeds the limit of {MAX_DIMENSION}",
            embedding.len()
        )));
    }
    if embedding.iter().any(|v| !v.is_finite()) {
        return Err(Error::invalid(
            "Embeddings must not contain NaN or Infinity values",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::test_helpers::*;
    use super::*;

    #[test]
    fn collection_names() {
        for ok in [
            "abc",
            "a-b",
            "a.b_c-1",
            "A1z",
            &"a".repeat(512),
            "1.2.3",
            "a.b.c.d",
        ] {
            validate_collection_name(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        let shape = "Validation error: name: Expected a name containing 3-512 characters from \
                     [a-zA-Z0-9._-], starting and ending with a character in [a-zA-Z0-9]. Got: ";
        for bad in [
            "",
            "ab",
            "-abc",
            "abc-",
            "_abc",
            "ab c",
            "abé",
            "a/b",
            &"a".repeat(513),
        ] {
            fails(validate_collection_name(bad), shape);
        }
        fails(validate_collection_name("ab"), "Got: ab");
        fails(
            validate_collection_name("a..b"),
            "Expected a name that does not contains two consecutive periods (..). Got a..b",
        );
        fails(
            validate_collection_name("192.168.1.1"),
            "Expected a name that is not a valid ip address. Got 192.168.1.1",
        );
        // Long bad names are quoted, not echoed whole.
        let long = format!("-{}", "a".repeat(1000));
        let e = validate_collection_name(&long).unwrap_err();
        assert!(e.message().len() < 400);
    }

    #[test]
    fn database_and_tenant_names() {
        validate_database_name("default_database").unwrap();
        fails(
            validate_database_name("db"),
            "Expected a name containing 3-512",
        );
        fails(validate_database_name("a..b"), "two consecutive periods");
        validate_tenant_name("default_tenant").unwrap();
        validate_tenant_name("ténant with spaces").unwrap();
        fails(
            validate_tenant_name("ab"),
            "tenant name containing 3-512 characters. Got: ab",
        );
        fails(
            validate_tenant_name(&"t".repeat(513)),
            "tenant name containing 3-512",
        );
        fails(validate_tenant_name("a/bc"), "without '/'");
        fails(validate_tenant_name("ab\ncd"), "control characters");
    }

    #[test]
    fn ids() {
        validate_id("a").unwrap();
        validate_id("é/ü?#").unwrap();
        validate_id(&"x".repeat(MAX_ID_BYTES)).unwrap();
        fails(
            validate_id(""),
            "Empty ID, ID must have at least one character",
        );
        fails(
            validate_id(&"x".repeat(MAX_ID_BYTES + 1)),
            "the limit is 4096",
        );
    }

    #[test]
    fn embeddings() {
        validate_embedding(&[0.0, -1.5, f32::MAX]).unwrap();
        fails(
            validate_embedding(&[]),
            "Each embedding must have at least 1 dimension",
        );
        for v in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            fails(
                validate_embedding(&[1.0, v]),
                "Embeddings must not contain NaN or Infinity values",
            );
        }
        // Out of f32 range: parsed to infinity upstream.
        fails(validate_embedding(&[1e40f64 as f32]), "NaN or Infinity");
        fails(
            validate_embedding(&vec![0.0; MAX_DIMENSION + 1]),
            "embedding dimension",
        );
    }
}
