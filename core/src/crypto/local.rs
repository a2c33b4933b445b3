//! A key provider holding a 256-bit master key in memory, for local deployments.
//!
//! The master key comes from `CHROMA_MASTER_KEY`, a key file, or a key file generated on
//! first use in the user's configuration directory; it must be kept outside the data
//! directory (see [`ensure_outside`]), or whoever copies the data copies the key too.
//!
//! A wrapped data key is, with AES-256-GCM under the master key:
//!
//! ```text
//! version = 1 (1) | key id (8) | nonce (12, random) | encrypted data key (32) | tag (16)
//! ```
//!
//! with associated data `version | key id | EncryptionContext::to_aad()`. The key id is
//! the first 8 bytes of SHA-256 of the master key, so a changed master key is reported as
//! such instead of as a corrupted blob.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use async_trait::async_trait;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{DataKey, EncryptionContext, KeyProvider};
use crate::error::{Error, ErrorCode, Result};

/// The environment variable holding the master key (base64 or hex of 32 bytes).
pub const MASTER_KEY_ENV: &str = "CHROMA_MASTER_KEY";

const WRAP_VERSION: u8 = 1;
const KEY_ID_LEN: usize = 8;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const PREFIX_LEN: usize = 1 + KEY_ID_LEN;
const WRAPPED_LEN: usize = PREFIX_LEN + NONCE_LEN + 32 + TAG_LEN;

/// Where the master key came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// The `CHROMA_MASTER_KEY` environment variable.
    Env,
    /// An existing key file.
    File(PathBuf),
    /// A key file generated now, at this path.
    Generated(PathBuf),
}

impl KeySource {
    /// The key file, if the key came from one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            KeySource::Env => None,
            KeySource::File(p) | KeySource::Generated(p) => Some(p),
        }
    }
}

pub struct LocalKeyProvider {
    cipher: Aes256Gcm,
    key_id: [u8; KEY_ID_LEN],
}

impl std::fmt::Debug for LocalKeyProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalKeyProvider")
            .field("key_id", &hex(&self.key_id))
            .finish()
    }
}

impl LocalKeyProvider {
    pub fn from_bytes(master_key: [u8; 32]) -> Self {
        let master_key = Zeroizing::new(master_key);
        let digest = Sha256::digest(master_key.as_slice());
        Self {
            cipher: Aes256Gcm::new_from_slice(master_key.as_slice()).expect("32-byte key"),
            key_id: digest[..KEY_ID_LEN].try_into().expect("8 bytes"),
        }
    }

    /// Loads the master key from `CHROMA_MASTER_KEY` if set, else from `master_key_file`
    /// if given, else from `{config dir}/chroma/master.key`, generating that file (mode
    /// 0600) with a random key if it does not exist.
    ///
    /// Key files must not be accessible by group or others (on unix); the caller should
    /// also check the file is outside the data directory with [`ensure_outside`].
    pub fn from_env_or_file(master_key_file: Option<&Path>) -> Result<(Self, KeySource)> {
        // An empty variable counts as unset (as compose files and CI often leave it).
        let env = std::env::var(MASTER_KEY_ENV)
            .ok()
            .filter(|v| !v.trim().is_empty());
        load(env.as_deref(), master_key_file, default_key_path)
    }

    /// The first 8 bytes of SHA-256 of the master key, as hex: safe to log.
    pub fn key_id(&self) -> String {
        hex(&self.key_id)
    }
}

/// `{config dir}/chroma/master.key`, e.g. `~/.config/chroma/master.key` on Linux.
pub fn default_key_path() -> Result<PathBuf> {
    dirs::config_dir().map(|d| d.join("chroma").join("master.key")).ok_or_else(|| {
        Error::invalid(format!(
            "no configuration directory for a master key file; set {MASTER_KEY_ENV} or pass a key file"
        ))
    })
}

fn load(
    env: Option<&str>,
    file: Option<&Path>,
    default_path: impl FnOnce() -> Result<PathBuf>,
) -> Result<(LocalKeyProvider, KeySource)> {
    if let Some(value) = env {
        let key = parse_key(value).ok_or_else(|| {
            Error::invalid(format!(
                "{MASTER_KEY_ENV} must be 32 bytes as base64 or as 64 hex characters"
            ))
        })?;
        return Ok((LocalKeyProvider::from_bytes(*key), KeySource::Env));
    }
    if let Some(path) = file {
        let key = read_key_file(path)?;
        return Ok((
            LocalKeyProvider::from_bytes(*key),
            KeySource::File(path.to_path_buf()),
        ));
    }
    let path = default_path()?;
    match generate_key_file(&path) {
        Ok(key) => {
            tracing::info!(path = %path.display(), "generated a new master key file; back it up, data is unreadable without it");
            Ok((
                LocalKeyProvider::from_bytes(*key),
                KeySource::Generated(path),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let key = read_key_file(&path)?;
            tracing::info!(path = %path.display(), "using master key file");
            Ok((LocalKeyProvider::from_bytes(*key), KeySource::File(path)))
        }
        Err(e) => Err(Error::internal_from(
            format!("cannot create master key file {}", path.display()),
            e,
        )),
    }
}

/// Decodes 32 bytes from 64 hex characters or base64 (standard or URL-safe, padded or
/// not), ignoring surrounding whitespace.
fn parse_key(text: &str) -> Option<Zeroizing<[u8; 32]>> {
    let text = text.trim();
    let mut key = Zeroizing::new([0u8; 32]);
    if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        for (i, pair) in text.as_bytes().chunks(2).enumerate() {
            let pair = std::str::from_utf8(pair).ok()?;
            key[i] = u8::from_str_radix(pair, 16).ok()?;
        }
        return Some(key);
    }
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    for engine in [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD] {
        if let Ok(decoded) = engine.decode(text) {
            let decoded = Zeroizing::new(decoded);
            if decoded.len() == 32 {
                key.copy_from_slice(&decoded);
                return Some(key);
            }
            return None;
        }
    }
    None
}

fn read_key_file(path: &Path) -> Result<Zeroizing<[u8; 32]>> {
    let text = Zeroizing::new(fs::read_to_string(path).map_err(|e| {
        let code = if e.kind() == io::ErrorKind::NotFound {
            ErrorCode::NotFound
        } else {
            ErrorCode::Internal
        };
        Error::with_source(
            code,
            format!("cannot read master key file {}", path.display()),
            e,
        )
    })?);
    check_permissions(path)?;
    parse_key(&text).ok_or_else(|| {
        Error::invalid(format!(
            "master key file {} must hold 32 bytes as base64 or as 64 hex characters",
            path.display()
        ))
    })
}

/// Refuses a key file that group or others can access, as ssh does with private keys.
#[cfg(unix)]
fn check_permissions(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(path)
        .map_err(|e| {
            Error::internal_from(format!("cannot stat master key file {}", path.display()), e)
        })?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(Error::new(
            ErrorCode::FailedPrecondition,
            format!(
                "master key file {} is accessible by group or others (mode {:o}); run chmod 600 on it",
                path.display(),
                mode & 0o777
            ),
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_permissions(_path: &Path) -> Result<()> {
    Ok(())
}

/// Creates `path` with a fresh random key, failing with `AlreadyExists` if it exists.
fn generate_key_file(path: &Path) -> io::Result<Zeroizing<[u8; 32]>> {
    if let Some(dir) = path.parent() {
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder.create(dir)?;
    }
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    let mut key = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(key.as_mut_slice());
    let text = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(key.as_slice()));
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    Ok(key)
}

/// Fails with `InvalidArgument` if `key_path` is inside `data_dir` (compared after
/// resolving symbolic links; either may not exist yet).
pub fn ensure_outside(key_path: &Path, data_dir: &Path) -> Result<()> {
    let key = resolve(key_path)?;
    let data = resolve(data_dir)?;
    if key.starts_with(&data) {
        return Err(Error::invalid(format!(
            "master key file {} is inside the data directory {}; keep it elsewhere",
            key_path.display(),
            data_dir.display()
        )));
    }
    Ok(())
}

/// Canonicalizes the longest existing ancestor of `path` and appends the rest.
fn resolve(path: &Path) -> Result<PathBuf> {
    let unresolvable = || Error::invalid(format!("cannot resolve path {}", path.display()));
    let absolute = std::path::absolute(path).map_err(|_| unresolvable())?;
    let mut existing = absolute.as_path();
    let mut missing = Vec::new();
    loop {
        if let Ok(mut base) = existing.canonicalize() {
            base.extend(missing.iter().rev());
            return Ok(base);
        }
        // A missing `..` cannot be resolved without the filesystem: `file_name` is `None`.
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                missing.push(name.to_owned());
                existing = parent;
            }
            _ => return Err(unresolvable()),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unwrap_denied(message: impl Into<String>) -> Error {
    Error::new(ErrorCode::PermissionDenied, message)
}

impl LocalKeyProvider {
    fn wrap(&self, key: &DataKey, ctx: &EncryptionContext) -> Vec<u8> {
        let mut out = Vec::with_capacity(WRAPPED_LEN);
        out.push(WRAP_VERSION);
        out.extend_from_slice(&self.key_id);
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        out.extend_from_slice(&nonce);
        let aad = [&out[..PREFIX_LEN], ctx.to_aad().as_slice()].concat();
        let start = out.len();
        out.extend_from_slice(key.0.as_slice());
        let tag = self
            .cipher
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), &aad, &mut out[start..])
            .expect("AES-GCM encrypts 32 bytes");
        out.extend_from_slice(&tag);
        out
    }

    fn unwrap(&self, wrapped: &[u8], ctx: &EncryptionContext) -> Result<DataKey> {
        if wrapped.len() != WRAPPED_LEN {
            return Err(unwrap_denied(format!(
                "wrapped data key has {} bytes, expected {WRAPPED_LEN}",
                wrapped.len()
            )));
        }
        if wrapped[0] != WRAP_VERSION {
            return Err(unwrap_denied(format!(
                "unsupported wrapped data key version {}",
                wrapped[0]
            )));
        }
        if wrapped[1..PREFIX_LEN] != self.key_id {
            return Err(unwrap_denied(format!(
                "data key was wrapped under another master key (key id {}, this one is {})",
                hex(&wrapped[1..PREFIX_LEN]),
                hex(&self.key_id)
            )));
        }
        let aad = [&wrapped[..PREFIX_LEN], ctx.to_aad().as_slice()].concat();
        let nonce = &wrapped[PREFIX_LEN..PREFIX_LEN + NONCE_LEN];
        let (body, tag) = wrapped[PREFIX_LEN + NONCE_LEN..].split_at(32);
        let mut key = DataKey(Zeroizing::new([0u8; 32]));
        key.0.copy_from_slice(body);
        self.cipher
            .decrypt_in_place_detached(
                Nonce::from_slice(nonce),
                &aad,
                key.0.as_mut_slice(),
                Tag::from_slice(tag),
            )
            .map_err(|_| {
                unwrap_denied(format!(
                    "data key failed to unwrap for tenant {} database {} collection {}",
                    ctx.tenant, ctx.database, ctx.collection
                ))
            })?;
        Ok(key)
    }
}

#[async_trait]
impl KeyProvider for LocalKeyProvider {
    async fn generate_data_key(&self, ctx: &EncryptionContext) -> Result<(DataKey, Vec<u8>)> {
        let mut key = DataKey(Zeroizing::new([0u8; 32]));
        rand::rngs::OsRng.fill_bytes(key.0.as_mut_slice());
        let wrapped = self.wrap(&key, ctx);
        Ok((key, wrapped))
    }

    async fn unwrap_data_key(&self, wrapped: &[u8], ctx: &EncryptionContext) -> Result<DataKey> {
        self.unwrap(wrapped, ctx)
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    fn ctx() -> EncryptionContext {
        EncryptionContext {
            tenant: "t".into(),
            database: "d".into(),
            collection: Uuid::from_u128(7),
        }
    }

    fn no_default() -> Result<PathBuf> {
        panic!("the default key path must not be used")
    }

    #[tokio::test]
    async fn conformance() {
        let master: [u8; 32] = std::array::from_fn(|i| i as u8);
        crate::crypto::conformance::suite(
            &LocalKeyProvider::from_bytes(master),
            &LocalKeyProvider::from_bytes(master),
            &LocalKeyProvider::from_bytes([2; 32]),
        )
        .await;
    }

    /// The blob's layout, and refusals that say why: another master key, another version.
    #[tokio::test]
    async fn wrapped_key_layout() {
        let p = LocalKeyProvider::from_bytes([1; 32]);
        let (_, wrapped) = p.generate_data_key(&ctx()).await.unwrap();
        assert_eq!(wrapped.len(), WRAPPED_LEN);
        assert_eq!(wrapped[0], WRAP_VERSION);
        assert_eq!(hex(&wrapped[1..PREFIX_LEN]), p.key_id());
        let e = LocalKeyProvider::from_bytes([2; 32])
            .unwrap_data_key(&wrapped, &ctx())
            .await
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::PermissionDenied);
        assert!(e.message().contains("another master key"), "{e:?}");
        let mut other_version = wrapped.clone();
        other_version[0] = WRAP_VERSION + 1;
        let e = p.unwrap_data_key(&other_version, &ctx()).await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::PermissionDenied);
        assert!(e.message().contains("version 2"), "{e:?}");
    }

    #[test]
    fn parses_keys() {
        let bytes: [u8; 32] = std::array::from_fn(|i| i as u8 * 8);
        let hex_text = hex(&bytes);
        assert_eq!(*parse_key(&hex_text).unwrap(), bytes);
        assert_eq!(*parse_key(&hex_text.to_uppercase()).unwrap(), bytes);
        let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
        assert_eq!(*parse_key(&format!("  {b64}\n")).unwrap(), bytes);
        assert_eq!(*parse_key(b64.trim_end_matches('=')).unwrap(), bytes);
        let url = base64::engine::general_purpose::URL_SAFE.encode(bytes);
        assert_eq!(*parse_key(&url).unwrap(), bytes);
        for bad in [
            "",
            "abc",
            &hex_text[..62],
            &base64::engine::general_purpose::STANDARD.encode([0u8; 31]),
        ] {
            assert!(parse_key(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn env_takes_precedence_and_is_validated() {
        let hex_text = hex(&[5; 32]);
        let (p, source) =
            load(Some(&hex_text), Some(Path::new("/nonexistent")), no_default).unwrap();
        assert_eq!(source, KeySource::Env);
        assert_eq!(p.key_id(), LocalKeyProvider::from_bytes([5; 32]).key_id());
        let e = load(Some("not a key"), None, no_default).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidArgument);
        assert!(e.message().contains(MASTER_KEY_ENV), "{e:?}");
        assert!(
            !e.message().contains("not a key"),
            "the value is not echoed"
        );
    }

    #[test]
    fn generates_then_reuses_the_default_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config/chroma/master.key");
        let (p1, s1) = load(None, None, || Ok(path.clone())).unwrap();
        assert_eq!(s1, KeySource::Generated(path.clone()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (p2, s2) = load(None, None, || Ok(path.clone())).unwrap();
        assert_eq!(s2, KeySource::File(path.clone()));
        assert_eq!(p1.key_id(), p2.key_id());
        // An explicit file path works the same.
        let (p3, s3) = load(None, Some(&path), no_default).unwrap();
        assert_eq!(s3.path(), Some(path.as_path()));
        assert_eq!(p3.key_id(), p1.key_id());
    }

    #[test]
    fn key_file_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.key");
        assert_eq!(
            load(None, Some(&missing), no_default).unwrap_err().code(),
            ErrorCode::NotFound
        );
        let bad = dir.path().join("bad.key");
        write_private(&bad, b"garbage");
        let e = load(None, Some(&bad), no_default).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidArgument);
        assert!(e.message().contains("bad.key"), "{e:?}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let open = dir.path().join("open.key");
            fs::write(&open, hex(&[1; 32])).unwrap();
            fs::set_permissions(&open, fs::Permissions::from_mode(0o644)).unwrap();
            let e = load(None, Some(&open), no_default).unwrap_err();
            assert_eq!(e.code(), ErrorCode::FailedPrecondition);
            assert!(e.message().contains("chmod 600"), "{e:?}");
        }
    }

    fn write_private(path: &Path, contents: &[u8]) {
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        options.open(path).unwrap().write_all(contents).unwrap();
    }

    #[test]
    fn key_file_must_be_outside_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        fs::create_dir(&data).unwrap();
        let inside = data.join("master.key");
        let outside = dir.path().join("master.key");
        assert_eq!(
            ensure_outside(&inside, &data).unwrap_err().code(),
            ErrorCode::InvalidArgument
        );
        ensure_outside(&outside, &data).unwrap();
        // Not yet created paths and sibling names that share a prefix.
        ensure_outside(&dir.path().join("data2/master.key"), &data).unwrap();
        let e = ensure_outside(&data.join("sub/new.key"), &dir.path().join("data/./"));
        assert_eq!(e.unwrap_err().code(), ErrorCode::InvalidArgument);
        #[cfg(unix)]
        {
            // Through a symbolic link to the data directory.
            let link = dir.path().join("link");
            std::os::unix::fs::symlink(&data, &link).unwrap();
            let e = ensure_outside(&link.join("master.key"), &data).unwrap_err();
            assert_eq!(e.code(), ErrorCode::InvalidArgument);
        }
    }
}
