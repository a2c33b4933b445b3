//! An object store in a directory of the local filesystem.
//!
//! A key `a/b/c` is the file `{root}/a/b/c`. Writes go to a temporary file in the target's
//! directory (`.tmp-{ulid}`), which is flushed to disk and then renamed over the target
//! (`put`) or hard-linked to it (`put_if_absent`: linking fails atomically if the target
//! exists), and the directory is flushed too, so an object is either absent or complete
//! after a crash. Temporary files a crash leaves behind are invisible to `list` and are
//! removed by [`LocalStore::remove_stale_temp_files`].
//!
//! Unlike S3, a filesystem cannot hold both an object `a` and an object `a/b`; writing one
//! when the other exists fails with `FailedPrecondition`. Engine keys never collide so.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;

use super::clamp_range;
use super::{ObjectMeta, ObjectStore};
use crate::error::{Error, ErrorCode, Result};

const TEMP_PREFIX: &str = ".tmp-";

#[derive(Debug, Clone)]
pub struct LocalStore {
    root: Arc<PathBuf>,
}

impl LocalStore {
    /// Opens (creating if needed) a store rooted at `root`.
    pub fn new(root: PathBuf) -> Result<Self> {
        fs::create_dir_all(&root).map_err(|e| {
            Error::internal_from(
                format!("cannot create object store root {}", root.display()),
                e,
            )
        })?;
        if !root.is_dir() {
            return Err(Error::invalid(format!(
                "object store root {} is not a directory",
                root.display()
            )));
        }
        Ok(Self {
            root: Arc::new(root),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Deletes temporary files (left by writes a crash interrupted) last modified more than
    /// `older_than` ago, returning how many were removed. Meant for start-up; `older_than`
    /// must exceed the longest write so that no write in progress loses its file.
    pub async fn remove_stale_temp_files(&self, older_than: Duration) -> Result<usize> {
        let root = self.root.clone();
        blocking(move || {
            let cutoff = SystemTime::now()
                .checked_sub(older_than)
                .unwrap_or(SystemTime::UNIX_EPOCH);
            let mut removed = 0;
            let mut found = Vec::new();
            walk(&root, &mut |path, name, meta| {
                if name.starts_with(TEMP_PREFIX) {
                    found.push((path.to_path_buf(), meta.modified().ok()));
                }
            })?;
            for (path, modified) in found {
                if modified.is_some_and(|m| m < cutoff) {
                    match fs::remove_file(&path) {
                        Ok(()) => removed += 1,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => {
                            return Err(Error::internal_from(
                                format!("cannot remove temporary file {}", path.display()),
                                e,
                            ))
                        }
                    }
                }
            }
            if removed > 0 {
                tracing::info!(removed, root = %root.display(), "removed stale temporary files");
            }
            Ok(removed)
        })
        .await
    }

    fn path_of(&self, key: &str) -> Result<PathBuf> {
        validate_key(key)?;
        Ok(self.root.join(key))
    }
}

/// Keys are relative `/`-separated paths of plain segments, so none can escape the root
/// or alias another key.
fn validate_key(key: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::invalid(format!("object key {key:?} {why}")));
    if key.is_empty() {
        return bad("is empty");
    }
    if key.contains('\\') || key.contains('\0') {
        return bad("contains a backslash or NUL");
    }
    if key.starts_with('/') {
        return bad("is absolute");
    }
    for segment in key.split('/') {
        match segment {
            "" => return bad("has an empty segment"),
            "." | ".." => return bad("has a '.' or '..' segment"),
            s if s.starts_with(TEMP_PREFIX) => {
                return bad("has a segment reserved for temporary files")
            }
            _ => {}
        }
    }
    Ok(())
}

/// A listing prefix may end anywhere, but the directory part must be a valid key path.
fn validate_prefix(prefix: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::invalid(format!("list prefix {prefix:?} {why}")));
    if prefix.contains('\\') || prefix.contains('\0') {
        return bad("contains a backslash or NUL");
    }
    if prefix.starts_with('/') {
        return bad("is absolute");
    }
    if prefix.split('/').any(|s| s == "." || s == "..") {
        return bad("has a '.' or '..' segment");
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal_from("object store task failed", e))?
}

fn not_found(key: &str) -> Error {
    Error::not_found(format!("object {key} not found"))
}

/// Maps an I/O error on `key`: missing files (or a missing directory on the way, or a file
/// where a directory should be) are `NotFound`.
fn read_error(key: &str, e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => not_found(key),
        _ => Error::internal_from(format!("cannot read object {key}"), e),
    }
}

fn write_error(key: &str, e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::NotADirectory
        | io::ErrorKind::IsADirectory
        | io::ErrorKind::DirectoryNotEmpty => Error::with_source(
            ErrorCode::FailedPrecondition,
            format!("object key {key} collides with an object or prefix of another key"),
            e,
        ),
        _ => Error::internal_from(format!("cannot write object {key}"), e),
    }
}

/// Opens `path` as a regular file; a directory is not an object.
/// The version of a file's content: every put writes a new file and renames it into
/// place, so the inode (with size and modification time) names one version.
fn etag_of(meta: &fs::Metadata) -> String {
    let nanos = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(meta);
    #[cfg(not(unix))]
    let inode = 0u64;
    format!("{:x}-{nanos:x}-{inode:x}", meta.len())
}

/// Fills `buf` from `offset` without moving a file position (so one open file serves
/// many reads).
pub(crate) fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
    }
    #[cfg(not(unix))]
    {
        let mut file = file;
        file.seek(SeekFrom::Start(offset))?;
        file.read_exact(buf)
    }
}

fn open_object(key: &str, path: &Path) -> Result<(File, fs::Metadata)> {
    let file = File::open(path).map_err(|e| read_error(key, e))?;
    let meta = file.metadata().map_err(|e| read_error(key, e))?;
    if !meta.is_file() {
        return Err(not_found(key));
    }
    Ok((file, meta))
}

/// Flushes a directory's entries (new names, renames) to disk.
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        // Directories cannot be opened as files elsewhere; NTFS journals metadata.
        let _ = dir;
        Ok(())
    }
}

/// Creates `dir` and any missing parents under `root`, flushing each parent that gained an
/// entry so the new directories survive a crash.
fn create_dirs(root: &Path, dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut current = root.to_path_buf();
    let rel = dir.strip_prefix(root).map_err(io::Error::other)?;
    for component in rel.components() {
        let parent = current.clone();
        current.push(component);
        match fs::create_dir(&current) {
            Ok(()) => sync_dir(&parent)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && current.is_dir() => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(io::Error::new(io::ErrorKind::NotADirectory, e));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A temporary file next to the target, removed on drop unless it was renamed away.
struct TempFile {
    path: PathBuf,
    keep: bool,
}

impl TempFile {
    /// Writes `data` to a fresh temporary file in `dir` and flushes it to disk.
    fn write(dir: &Path, data: &[u8]) -> io::Result<Self> {
        let path = dir.join(format!("{TEMP_PREFIX}{}", ulid::Ulid::new()));
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        let temp = Self { path, keep: false };
        file.write_all(data)?;
        file.sync_all()?;
        Ok(temp)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            if let Err(e) = fs::remove_file(&self.path) {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(path = %self.path.display(), error = %e, "cannot remove temporary file");
                }
            }
        }
    }
}

fn put_blocking(root: &Path, key: &str, path: &Path, data: &[u8], if_absent: bool) -> Result<()> {
    let dir = path
        .parent()
        .expect("a key path has a parent under the root");
    create_dirs(root, dir).map_err(|e| write_error(key, e))?;
    let mut temp = TempFile::write(dir, data).map_err(|e| write_error(key, e))?;
    if if_absent {
        match fs::hard_link(&temp.path, path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(Error::already_exists(format!(
                    "object {key} already exists"
                )));
            }
            Err(e) => return Err(write_error(key, e)),
        }
        // The temporary name is removed on drop; the object keeps the data.
    } else {
        fs::rename(&temp.path, path).map_err(|e| write_error(key, e))?;
        temp.keep = true;
    }
    drop(temp);
    sync_dir(dir).map_err(|e| write_error(key, e))
}

/// Visits every regular file under `dir` (recursively) with its path and file name.
/// Symbolic links are not followed.
fn walk(dir: &Path, visit: &mut dyn FnMut(&Path, &str, &fs::Metadata)) -> Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(())
        }
        Err(e) => {
            return Err(Error::internal_from(
                format!("cannot list directory {}", dir.display()),
                e,
            ))
        }
    };
    for entry in entries {
        let entry = entry.map_err(|e| {
            Error::internal_from(format!("cannot list directory {}", dir.display()), e)
        })?;
        let path = entry.path();
        let file_type = match entry.file_type() {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(Error::internal_from(
                    format!("cannot stat {}", path.display()),
                    e,
                ))
            }
        };
        if file_type.is_dir() {
            walk(&path, visit)?;
        } else if file_type.is_file() {
            let meta = match entry.metadata() {
                Ok(m) => m,
                // Deleted while we listed.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(Error::internal_from(
                        format!("cannot stat {}", path.display()),
                        e,
                    ))
                }
            };
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                tracing::warn!(path = %path.display(), "skipping a file whose name is not UTF-8");
                continue;
            };
            visit(&path, &name, &meta);
        }
    }
    Ok(())
}

fn key_of(root: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(root).ok()?;
    let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
    Some(parts?.join("/"))
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn get_version(&self, key: &str, etag: &str) -> Result<Bytes> {
        let path = self.path_of(key)?;
        let (key, etag) = (key.to_owned(), super::bare_etag(etag).to_owned());
        blocking(move || {
            // The version of the file opened, which a rename cannot change under us.
            let (mut file, meta) = open_object(&key, &path)?;
            if etag_of(&meta) != etag {
                return Err(super::version_gone(&key, &etag));
            }
            let mut data = Vec::with_capacity(meta.len() as usize);
            file.read_to_end(&mut data)
                .map_err(|e| read_error(&key, e))?;
            Ok(Bytes::from(data))
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        let path = self.path_of(key)?;
        let key = key.to_owned();
        blocking(move || {
            let (mut file, meta) = open_object(&key, &path)?;
            let mut data = Vec::with_capacity(meta.len() as usize);
            file.read_to_end(&mut data)
                .map_err(|e| read_error(&key, e))?;
            Ok(Bytes::from(data))
        })
        .await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let path = self.path_of(key)?;
        let key = key.to_owned();
        blocking(move || {
            let (mut file, meta) = open_object(&key, &path)?;
            let r = clamp_range(&key, &range, meta.len())?;
            let mut data = vec![0u8; (r.end - r.start) as usize];
            if !data.is_empty() {
                file.seek(SeekFrom::Start(r.start))
                    .map_err(|e| read_error(&key, e))?;
                file.read_exact(&mut data)
                    .map_err(|e| read_error(&key, e))?;
            }
            Ok(Bytes::from(data))
        })
        .await
    }

    async fn get_ranges(&self, key: &str, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let path = self.path_of(key)?;
        let key = key.to_owned();
        let ranges = ranges.to_vec();
        blocking(move || {
            let (file, meta) = open_object(&key, &path)?;
            ranges
                .iter()
                .map(|range| {
                    let r = clamp_range(&key, range, meta.len())?;
                    let mut data = vec![0u8; (r.end - r.start) as usize];
                    read_exact_at(&file, &mut data, r.start).map_err(|e| read_error(&key, e))?;
                    Ok(Bytes::from(data))
                })
                .collect()
        })
        .await
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        let path = self.path_of(key)?;
        let key = key.to_owned();
        blocking(move || {
            let meta = fs::metadata(&path).map_err(|e| read_error(&key, e))?;
            if !meta.is_file() {
                return Err(not_found(&key));
            }
            let last_modified = meta.modified().map_err(|e| read_error(&key, e))?;
            Ok(ObjectMeta {
                key,
                size: meta.len(),
                last_modified,
                etag: etag_of(&meta),
            })
        })
        .await
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        let path = self.path_of(key)?;
        let (root, key) = (self.root.clone(), key.to_owned());
        blocking(move || put_blocking(&root, &key, &path, &data, false)).await
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<()> {
        let path = self.path_of(key)?;
        let (root, key) = (self.root.clone(), key.to_owned());
        blocking(move || put_blocking(&root, &key, &path, &data, true)).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path_of(key)?;
        let key = key.to_owned();
        blocking(move || {
            match fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_file() => {}
                // Missing, or only a prefix of other keys: nothing to delete.
                Ok(_) => return Ok(()),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                    ) =>
                {
                    return Ok(())
                }
                Err(e) => {
                    return Err(Error::internal_from(
                        format!("cannot delete object {key}"),
                        e,
                    ))
                }
            }
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => {
                    return Err(Error::internal_from(
                        format!("cannot delete object {key}"),
                        e,
                    ))
                }
            }
            let dir = path
                .parent()
                .expect("a key path has a parent under the root");
            sync_dir(dir)
                .map_err(|e| Error::internal_from(format!("cannot delete object {key}"), e))
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        validate_prefix(prefix)?;
        let root = self.root.clone();
        let prefix = prefix.to_owned();
        blocking(move || {
            // Walk only the deepest directory the prefix names in full.
            let start = match prefix.rfind('/') {
                Some(i) => root.join(&prefix[..i]),
                None => root.to_path_buf(),
            };
            let mut out = Vec::new();
            walk(&start, &mut |path, name, meta| {
                if name.starts_with(TEMP_PREFIX) {
                    return;
                }
                let Some(key) = key_of(&root, path) else {
                    return;
                };
                if key.starts_with(&prefix) {
                    out.push(ObjectMeta {
                        key,
                        size: meta.len(),
                        last_modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                        etag: etag_of(meta),
                    });
                }
            })?;
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, LocalStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path().join("objects")).unwrap();
        (dir, store)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn conformance() {
        let (_dir, store) = store();
        crate::storage::conformance::suite(&store).await;
    }

    #[tokio::test]
    async fn rejects_bad_keys() {
        let (_dir, store) = store();
        for key in [
            "", "/abs", "a/../b", "..", "a/./b", ".", "a//b", "a/", "a\\b", "a\0b", "a/.tmp-x",
        ] {
            let err = store.put(key, Bytes::from_static(b"x")).await.unwrap_err();
            assert_eq!(err.code(), ErrorCode::InvalidArgument, "{key:?}");
            assert_eq!(
                store.get(key).await.unwrap_err().code(),
                ErrorCode::InvalidArgument
            );
            assert_eq!(
                store.delete(key).await.unwrap_err().code(),
                ErrorCode::InvalidArgument
            );
        }
        for prefix in ["/", "../", "a/../", "a\\"] {
            assert_eq!(
                store.list(prefix).await.unwrap_err().code(),
                ErrorCode::InvalidArgument
            );
        }
        // Dots inside a segment are fine.
        store
            .put("a/..b/c.d", Bytes::from_static(b"x"))
            .await
            .unwrap();
        assert_eq!(
            store.get("a/..b/c.d").await.unwrap(),
            Bytes::from_static(b"x")
        );
    }

    #[tokio::test]
    async fn writes_leave_no_temp_files_and_list_skips_them() {
        let (_dir, store) = store();
        store
            .put("c/1/log/a", Bytes::from_static(b"1"))
            .await
            .unwrap();
        store
            .put("c/1/log/a", Bytes::from_static(b"2"))
            .await
            .unwrap();
        store
            .put_if_absent("c/1/log/b", Bytes::from_static(b"3"))
            .await
            .unwrap();
        store
            .put_if_absent("c/1/log/b", Bytes::from_static(b"4"))
            .await
            .unwrap_err();
        let dir = store.root().join("c/1/log");
        let mut names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["a", "b"]);

        // A crash leaves a temporary file: invisible, then cleaned up.
        fs::write(dir.join(".tmp-01CRASHED"), b"partial").unwrap();
        let keys: Vec<_> = store
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.key)
            .collect();
        assert_eq!(keys, ["c/1/log/a", "c/1/log/b"]);
        assert_eq!(
            store
                .remove_stale_temp_files(Duration::from_secs(3600))
                .await
                .unwrap(),
            0
        );
        assert_eq!(
            store.remove_stale_temp_files(Duration::ZERO).await.unwrap(),
            1
        );
        assert!(!dir.join(".tmp-01CRASHED").exists());
    }

    #[tokio::test]
    async fn object_and_prefix_collide() {
        let (_dir, store) = store();
        store.put("a", Bytes::from_static(b"1")).await.unwrap();
        let err = store
            .put("a/b", Bytes::from_static(b"2"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::FailedPrecondition, "{err:?}");
        store.put("x/y", Bytes::from_static(b"1")).await.unwrap();
        let err = store.put("x", Bytes::from_static(b"2")).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::FailedPrecondition, "{err:?}");
        // Deleting a prefix is a no-op, not an error.
        store.delete("x").await.unwrap();
        assert_eq!(store.get("x/y").await.unwrap(), Bytes::from_static(b"1"));
    }

    #[tokio::test]
    async fn data_survives_reopen() {
        let (dir, store) = store();
        store
            .put("k/v", Bytes::from_static(b"persisted"))
            .await
            .unwrap();
        drop(store);
        let store = LocalStore::new(dir.path().join("objects")).unwrap();
        assert_eq!(
            store.get("k/v").await.unwrap(),
            Bytes::from_static(b"persisted")
        );
    }
}
