//! The envelope every stored object is written in: a streaming AEAD in the manner of
//! Tink's AES-GCM-HKDF streaming, so any byte range can be fetched and decrypted alone.
//!
//! Layout (version 1), all integers big-endian:
//!
//! ```text
//! header (48 bytes):
//!   magic "CHE1" (4) | version = 1 (1) | chunk size in plaintext bytes, u32 (4)
//!   | salt (32, random) | nonce prefix (7, random)
//! chunks: chunk 0 | chunk 1 | ... | chunk n-1
//!   each = AES-256-GCM(subkey, nonce, plaintext chunk) | tag (16)
//! ```
//!
//! - Every chunk holds exactly `chunk size` plaintext bytes except the last, which holds
//!   1 to `chunk size` bytes; an empty plaintext is one empty last chunk. So the plaintext
//!   length follows from the object's length.
//! - `subkey = HKDF-SHA256(ikm = data key, salt, info = header[0..9] | associated data)`.
//!   The associated data is the object's key, so an object moved to another key fails to
//!   decrypt; the magic, version and chunk size are bound too.
//! - `nonce = nonce prefix (7) | chunk index u32 (4) | last-chunk flag (1)`: reordering,
//!   dropping or duplicating chunks, and truncating at a chunk boundary, all fail.
//!
//! Failures to authenticate (tampering, truncation, wrong key or associated data) are
//! `Internal` errors with the message "object failed authentication": a stored object the
//! engine wrote that no longer verifies is corrupted state, not a caller's mistake.
//! Objects that are not envelopes at all are `Internal` too.

use std::ops::Range;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use bytes::{Bytes, BytesMut};
use hkdf::Hkdf;
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

use super::DataKey;
use crate::error::{Error, Result};
use crate::storage::ObjectStore;

pub const MAGIC: [u8; 4] = *b"CHE1";
pub const VERSION: u8 = 1;
/// Length of the header in bytes.
pub const HEADER_LEN: usize = 48;
/// Length of each chunk's authentication tag.
pub const TAG_LEN: usize = 16;
/// Plaintext bytes per chunk unless asked otherwise.
pub const DEFAULT_CHUNK_SIZE: u32 = 64 * 1024;
/// Largest chunk size accepted, so a corrupted header cannot ask for huge buffers.
pub const MAX_CHUNK_SIZE: u32 = 16 * 1024 * 1024;
/// [`RangeReader::read`] fetches spans longer than this in parts of this size, together.
pub const READ_PART: u64 = 8 * 1024 * 1024;
/// A [`RangeReader::read_many`] of at least this many bytes (in more than one span)
/// decrypts each span as it arrives, on rayon's pool.
const STREAMED_READ: u64 = 1 << 20;

/// Ranges [`RangeReader::read_many`] merges into one read span at most this many bytes.
pub const MAX_COALESCED: u64 = 1024 * 1024;

const SALT_LEN: usize = 32;
const PREFIX_LEN: usize = 7;
/// Chunk indexes are 32-bit in the nonce.
const MAX_CHUNKS: u64 = 1 << 32;

fn auth_failed() -> Error {
    Error::internal("object failed authentication")
}

/// The parsed header of an envelope.
#[derive(Clone, PartialEq, Eq)]
pub struct EnvelopeHeader {
    version: u8,
    chunk_size: u32,
    salt: [u8; SALT_LEN],
    nonce_prefix: [u8; PREFIX_LEN],
}

impl std::fmt::Debug for EnvelopeHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvelopeHeader")
            .field("version", &self.version)
            .field("chunk_size", &self.chunk_size)
            .finish_non_exhaustive()
    }
}

impl EnvelopeHeader {
    /// Parses the header from the first [`HEADER_LEN`] bytes of an object (extra bytes are
    /// ignored). The header is authenticated only later, by decrypting a chunk under it.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        if bytes.len() < HEADER_LEN {
            return Err(Error::internal(format!(
                "object is too short for an envelope header ({} bytes)",
                bytes.len()
            )));
        }
        if bytes[0..4] != MAGIC {
            return Err(Error::internal("object is not an envelope (bad magic)"));
        }
        let version = bytes[4];
        if version != VERSION {
            return Err(Error::internal(format!(
                "unsupported envelope version {version}"
            )));
        }
        let chunk_size = u32::from_be_bytes(bytes[5..9].try_into().expect("4 bytes"));
        if chunk_size == 0 || chunk_size > MAX_CHUNK_SIZE {
            return Err(Error::internal(format!(
                "invalid envelope chunk size {chunk_size}"
            )));
        }
        Ok(Self {
            version,
            chunk_size,
            salt: bytes[9..41].try_into().expect("32 bytes"),
            nonce_prefix: bytes[41..48].try_into().expect("7 bytes"),
        })
    }

    fn random(chunk_size: u32) -> Self {
        let mut salt = [0u8; SALT_LEN];
        let mut nonce_prefix = [0u8; PREFIX_LEN];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        rand::rngs::OsRng.fill_bytes(&mut nonce_prefix);
        Self {
            version: VERSION,
            chunk_size,
            salt,
            nonce_prefix,
        }
    }

    fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..4].copy_from_slice(&MAGIC);
        out[4] = self.version;
        out[5..9].copy_from_slice(&self.chunk_size.to_be_bytes());
        out[9..41].copy_from_slice(&self.salt);
        out[41..48].copy_from_slice(&self.nonce_prefix);
        out
    }

    /// Plaintext bytes per chunk (the last chunk may hold fewer).
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Stored bytes per full chunk: plaintext plus tag.
    fn sealed_chunk_len(&self) -> u64 {
        u64::from(self.chunk_size) + TAG_LEN as u64
    }

    /// The number of chunks of an envelope `object_len` bytes long (header included).
    pub fn chunk_count(&self, object_len: u64) -> Result<u64> {
        let body = object_len
            .checked_sub(HEADER_LEN as u64)
            .filter(|b| *b > 0)
            .ok_or_else(auth_failed)?;
        let n = body.div_ceil(self.sealed_chunk_len());
        let last = body - (n - 1) * self.sealed_chunk_len();
        if last < TAG_LEN as u64 || n > MAX_CHUNKS {
            return Err(auth_failed());
        }
        Ok(n)
    }

    /// The plaintext length of an envelope `object_len` bytes long (header included).
    ///
    /// The length itself is not authenticated until the last chunk is decrypted; a
    /// ranged read of earlier chunks cannot detect that later chunks were cut off.
    pub fn plaintext_len(&self, object_len: u64) -> Result<u64> {
        let n = self.chunk_count(object_len)?;
        Ok(object_len - HEADER_LEN as u64 - n * TAG_LEN as u64)
    }

    fn cipher(&self, key: &DataKey, aad: &[u8]) -> Aes256Gcm {
        let header = self.to_bytes();
        let mut info = Vec::with_capacity(9 + aad.len());
        info.extend_from_slice(&header[0..9]);
        info.extend_from_slice(aad);
        let hk = Hkdf::<Sha256>::new(Some(&self.salt), key.0.as_slice());
        let mut subkey = Zeroizing::new([0u8; 32]);
        hk.expand(&info, subkey.as_mut_slice())
            .expect("32 bytes is a valid HKDF-SHA256 length");
        Aes256Gcm::new_from_slice(subkey.as_slice()).expect("32-byte AES-256 key")
    }

    fn nonce(&self, index: u64, last: bool) -> [u8; 12] {
        let mut nonce = [0u8; 12];
        nonce[0..7].copy_from_slice(&self.nonce_prefix);
        let index = u32::try_from(index).expect("chunk index checked against MAX_CHUNKS");
        nonce[7..11].copy_from_slice(&index.to_be_bytes());
        nonce[11] = u8::from(last);
        nonce
    }
}

/// Encrypts `plaintext` bound to `aad` (the object's key) in chunks of
/// [`DEFAULT_CHUNK_SIZE`].
pub fn encrypt(key: &DataKey, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    encrypt_with_chunk_size(key, aad, plaintext, DEFAULT_CHUNK_SIZE)
        .expect("the default chunk size is valid for any in-memory plaintext")
}

/// Like [`encrypt`] with a chosen chunk size (1 to [`MAX_CHUNK_SIZE`] bytes).
pub fn encrypt_with_chunk_size(
    key: &DataKey,
    aad: &[u8],
    plaintext: &[u8],
    chunk_size: u32,
) -> Result<Vec<u8>> {
    encrypt_owned(key, aad, plaintext.to_vec(), chunk_size)
}

/// [`encrypt_with_chunk_size`] in the plaintext's own buffer: the buffer grows by the
/// header and the tags and each chunk is moved to its place and encrypted there, last
/// chunk first (a chunk only moves towards the end, past chunks already done). Sealing a
/// large object so never holds it twice.
pub fn encrypt_owned(
    key: &DataKey,
    aad: &[u8],
    mut buf: Vec<u8>,
    chunk_size: u32,
) -> Result<Vec<u8>> {
    if chunk_size == 0 || chunk_size > MAX_CHUNK_SIZE {
        return Err(Error::invalid(format!(
            "envelope chunk size {chunk_size} is not in 1..={MAX_CHUNK_SIZE}"
        )));
    }
    let cs = chunk_size as usize;
    let len = buf.len();
    let n = len.div_ceil(cs).max(1);
    if n as u64 > MAX_CHUNKS {
        return Err(Error::invalid(format!(
            "plaintext of {len} bytes needs more than 2^32 chunks of {chunk_size} bytes"
        )));
    }
    let header = EnvelopeHeader::random(chunk_size);
    let cipher = header.cipher(key, aad);
    buf.resize(HEADER_LEN + len + n * TAG_LEN, 0);
    for i in (0..n).rev() {
        let source = (i * cs).min(len)..((i + 1) * cs).min(len);
        let chunk_len = source.len();
        let at = HEADER_LEN + i * (cs + TAG_LEN);
        buf.copy_within(source, at);
        let nonce = header.nonce(i as u64, i + 1 == n);
        let tag = cipher
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), b"", &mut buf[at..at + chunk_len])
            .expect("AES-GCM encrypts any chunk under 64 GiB");
        buf[at + chunk_len..at + chunk_len + TAG_LEN].copy_from_slice(&tag);
    }
    buf[..HEADER_LEN].copy_from_slice(&header.to_bytes());
    Ok(buf)
}

/// Decrypts a whole envelope written by [`encrypt`] with the same key and `aad`.
pub fn decrypt(key: &DataKey, aad: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>> {
    let header = EnvelopeHeader::parse(ciphertext)?;
    let len = ciphertext.len() as u64;
    let n = header.chunk_count(len)?;
    let range = ChunkRange {
        ciphertext: HEADER_LEN as u64..len,
        first_chunk: 0,
        chunk_count: n,
        includes_last: true,
        plaintext: 0..header.plaintext_len(len)?,
    };
    decrypt_range(key, aad, &header, &range, &ciphertext[HEADER_LEN..])
}

/// Which whole chunks hold a plaintext range, computed by [`ciphertext_range`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkRange {
    /// The bytes of the object to fetch: whole chunks, tags included.
    pub ciphertext: Range<u64>,
    /// The index of the first chunk in `ciphertext`.
    pub first_chunk: u64,
    /// How many chunks `ciphertext` holds (0 for an empty range).
    pub chunk_count: u64,
    /// Whether `ciphertext` ends with the object's last chunk.
    pub includes_last: bool,
    /// The plaintext range that will be returned: the request clamped to the plaintext.
    pub plaintext: Range<u64>,
}

/// Plans a ranged read: the chunks of an envelope `object_len` bytes long (header
/// included, e.g. from `ObjectStore::head` or a manifest) that hold `plaintext_range`.
///
/// The range follows the object store's rules: clamped to the plaintext's end, and
/// `InvalidArgument` if it starts past the end or is inverted.
pub fn ciphertext_range(
    header: &EnvelopeHeader,
    object_len: u64,
    plaintext_range: Range<u64>,
) -> Result<ChunkRange> {
    let plaintext_len = header.plaintext_len(object_len)?;
    let n = header.chunk_count(object_len)?;
    let Range { start, end } = plaintext_range;
    if start > end {
        return Err(Error::invalid(format!(
            "plaintext range {start}..{end} is inverted"
        )));
    }
    if start > plaintext_len {
        return Err(Error::invalid(format!(
            "plaintext range {start}..{end} starts past the end ({plaintext_len} bytes)"
        )));
    }
    let end = end.min(plaintext_len);
    if start == end {
        let at = HEADER_LEN as u64;
        return Ok(ChunkRange {
            ciphertext: at..at,
            first_chunk: 0,
            chunk_count: 0,
            includes_last: false,
            plaintext: start..end,
        });
    }
    let cs = u64::from(header.chunk_size);
    let first = start / cs;
    let last = (end - 1) / cs;
    let ct_start = HEADER_LEN as u64 + first * header.sealed_chunk_len();
    let includes_last = last + 1 == n;
    let ct_end = if includes_last {
        object_len
    } else {
        HEADER_LEN as u64 + (last + 1) * header.sealed_chunk_len()
    };
    Ok(ChunkRange {
        ciphertext: ct_start..ct_end,
        first_chunk: first,
        chunk_count: last - first + 1,
        includes_last,
        plaintext: start..end,
    })
}

/// Decrypts the chunks `range` names (the object's bytes in `range.ciphertext`, fetched by
/// the caller) and returns the plaintext in `range.plaintext`. Each chunk is
/// authenticated; the last-chunk flag is checked when the range ends with the last chunk.
pub fn decrypt_range(
    key: &DataKey,
    aad: &[u8],
    header: &EnvelopeHeader,
    range: &ChunkRange,
    chunks: &[u8],
) -> Result<Vec<u8>> {
    decrypt_chunks(&header.cipher(key, aad), header, range, chunks).map(Vec::from)
}

/// [`decrypt_range`] with the object's cipher already derived.
fn decrypt_chunks(
    cipher: &Aes256Gcm,
    header: &EnvelopeHeader,
    range: &ChunkRange,
    chunks: &[u8],
) -> Result<Bytes> {
    decrypt_in_place(cipher, header, range, BytesMut::from(chunks))
}

/// [`decrypt_chunks`] of chunks the store handed over: decrypted where they lie when
/// nothing else holds them (a store's read is), else from a copy. A cold query's codes
/// are a hundred megabytes: a second buffer for them would be as many fresh pages.
fn decrypt_owned(
    cipher: &Aes256Gcm,
    header: &EnvelopeHeader,
    range: &ChunkRange,
    chunks: Bytes,
) -> Result<Bytes> {
    let buf = chunks
        .try_into_mut()
        .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
    decrypt_in_place(cipher, header, range, buf)
}

/// Decrypts the chunks in `buf` (the object's bytes in `range.ciphertext`) where they
/// lie, each chunk's plaintext moved down over the tags before it, and returns the
/// plaintext in `range.plaintext`.
fn decrypt_in_place(
    cipher: &Aes256Gcm,
    header: &EnvelopeHeader,
    range: &ChunkRange,
    mut buf: BytesMut,
) -> Result<Bytes> {
    if buf.len() as u64 != range.ciphertext.end - range.ciphertext.start {
        return Err(Error::invalid(format!(
            "expected {} bytes of chunks, got {}",
            range.ciphertext.end - range.ciphertext.start,
            buf.len()
        )));
    }
    if range.chunk_count == 0 {
        return Ok(Bytes::new());
    }
    let sealed = header.sealed_chunk_len() as usize;
    // Plaintext bytes so far (at the buffer's start) and where the next chunk starts.
    let (mut written, mut at) = (0usize, 0usize);
    for i in 0..range.chunk_count {
        let final_in_range = i + 1 == range.chunk_count;
        let rest = buf.len() - at;
        let take = if final_in_range {
            rest
        } else {
            sealed.min(rest)
        };
        // Inner chunks are always full; only the object's last chunk may be shorter.
        if take < TAG_LEN
            || take > sealed
            || (take < sealed && !(final_in_range && range.includes_last))
        {
            return Err(auth_failed());
        }
        let index = range.first_chunk + i;
        if index >= MAX_CHUNKS {
            return Err(auth_failed());
        }
        let body_len = take - TAG_LEN;
        let (body, tag) = buf[at..at + take].split_at_mut(body_len);
        let tag = *Tag::from_slice(tag);
        let nonce = header.nonce(index, final_in_range && range.includes_last);
        cipher
            .decrypt_in_place_detached(Nonce::from_slice(&nonce), b"", body, &tag)
            .map_err(|_| auth_failed())?;
        buf.copy_within(at..at + body_len, written);
        written += body_len;
        at += take;
    }
    let base = range.first_chunk * u64::from(header.chunk_size);
    let from = (range.plaintext.start - base) as usize;
    let to = (range.plaintext.end - base) as usize;
    if to > written || from > to {
        return Err(auth_failed());
    }
    buf.truncate(to);
    Ok(buf.freeze().slice(from..))
}

/// Reads and decrypts `plaintext_range` of the envelope stored at `key` (whose key is also
/// its associated data), fetching only the header and the chunks that hold the range.
pub async fn read_range(
    store: &dyn ObjectStore,
    key: &str,
    data_key: &DataKey,
    plaintext_range: Range<u64>,
) -> Result<Bytes> {
    let (meta, head) =
        futures::try_join!(store.head(key), store.get_range(key, 0..HEADER_LEN as u64))?;
    let header = EnvelopeHeader::parse(&head)?;
    let range = ciphertext_range(&header, meta.size, plaintext_range)?;
    if range.chunk_count == 0 {
        return Ok(Bytes::new());
    }
    let chunks = store.get_range(key, range.ciphertext.clone()).await?;
    decrypt_range(data_key, key.as_bytes(), &header, &range, &chunks).map(Bytes::from)
}

/// Ciphertext bytes after the header that hold the whole chunks covering a plaintext
/// prefix of `prefix` bytes, for any chunk size from 4 KiB to [`DEFAULT_CHUNK_SIZE`]: the
/// chunks hold less than one chunk more than the prefix, with a tag each.
fn sealed_prefix_len(prefix: u64) -> u64 {
    const SMALLEST_CHUNK: u64 = 4096;
    let tags = prefix / SMALLEST_CHUNK + 2;
    prefix + u64::from(DEFAULT_CHUNK_SIZE) + tags * TAG_LEN as u64
}

/// The stored length of `key`: `known`, or asked of the store.
async fn object_len_of(
    store: &std::sync::Arc<dyn ObjectStore>,
    key: &str,
    known: Option<u64>,
) -> Result<u64> {
    match known {
        Some(len) => Ok(len),
        None => Ok(store.head(key).await?.size),
    }
}

/// An envelope opened for reading ranges of its plaintext: its length, header and cipher
/// are fetched and derived once, then each read fetches and decrypts only the chunks that
/// hold its range. Made for random access into large objects (segment vectors and
/// records).
#[derive(Clone)]
pub struct RangeReader {
    store: std::sync::Arc<dyn ObjectStore>,
    key: String,
    object_len: u64,
    header: EnvelopeHeader,
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for RangeReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RangeReader")
            .field("key", &self.key)
            .field("object_len", &self.object_len)
            .finish_non_exhaustive()
    }
}

impl RangeReader {
    /// Opens the envelope at `key` (its key is its associated data): one round trip (the
    /// object's length and header, fetched together).
    pub async fn open(
        store: std::sync::Arc<dyn ObjectStore>,
        key: &str,
        data_key: &DataKey,
    ) -> Result<Self> {
        Self::open_sized(store, key, data_key, None).await
    }

    /// [`RangeReader::open`] of an object whose stored length may be known already (a
    /// manifest records it): then only its header is fetched, without a `HEAD` request.
    pub async fn open_sized(
        store: std::sync::Arc<dyn ObjectStore>,
        key: &str,
        data_key: &DataKey,
        object_len: Option<u64>,
    ) -> Result<Self> {
        let (object_len, head) = futures::try_join!(
            object_len_of(&store, key, object_len),
            store.get_range(key, 0..HEADER_LEN as u64)
        )?;
        Self::from_header(store, key, data_key, object_len, &head)
    }

    /// [`RangeReader::open_sized`], reading the plaintext's first `prefix` bytes in the
    /// same round trip (clamped to its end): the header is fetched with enough ciphertext
    /// after it for the whole chunks that hold them, of any size from 4 KiB to the default
    /// (a chunk is decrypted whole: a prefix that ends inside one needs all of it).
    pub async fn open_with_prefix(
        store: std::sync::Arc<dyn ObjectStore>,
        key: &str,
        data_key: &DataKey,
        object_len: Option<u64>,
        prefix: u64,
    ) -> Result<(Self, Bytes)> {
        let sealed = sealed_prefix_len(prefix);
        let (object_len, head) = futures::try_join!(
            object_len_of(&store, key, object_len),
            store.get_range(key, 0..HEADER_LEN as u64 + sealed)
        )?;
        let reader = Self::from_header(store, key, data_key, object_len, &head)?;
        let plan = ciphertext_range(&reader.header, reader.object_len, 0..prefix)?;
        if plan.chunk_count == 0 {
            return Ok((reader, Bytes::new()));
        }
        let fetched = match head.get(plan.ciphertext.start as usize..plan.ciphertext.end as usize) {
            Some(chunks) => decrypt_chunks(&reader.cipher, &reader.header, &plan, chunks)?,
            // Larger chunks than expected: read the rest.
            None => reader.read(0..prefix).await?,
        };
        Ok((reader, fetched))
    }

    /// A reader of the `object_len` bytes at `key`, from the start of the object (at
    /// least its header).
    fn from_header(
        store: std::sync::Arc<dyn ObjectStore>,
        key: &str,
        data_key: &DataKey,
        object_len: u64,
        head: &[u8],
    ) -> Result<Self> {
        let header = EnvelopeHeader::parse(head)?;
        header.chunk_count(object_len)?;
        let cipher = header.cipher(data_key, key.as_bytes());
        Ok(Self {
            store,
            key: key.to_owned(),
            object_len,
            header,
            cipher,
        })
    }

    /// The plaintext's length.
    pub fn len(&self) -> u64 {
        self.header
            .plaintext_len(self.object_len)
            .expect("checked when opened")
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Asks the store to fetch the chunks that hold plaintext `range` ahead of reads
    /// ([`ObjectStore::prefetch`]).
    pub async fn prefetch(&self, range: Range<u64>) -> Result<()> {
        let plan = ciphertext_range(&self.header, self.object_len, range)?;
        if plan.chunk_count == 0 {
            return Ok(());
        }
        self.store.prefetch(&self.key, plan.ciphertext).await
    }

    /// The plaintext in `range` (clamped to its end, like [`ObjectStore::get_range`]).
    pub async fn read(&self, range: Range<u64>) -> Result<Bytes> {
        let plan = ciphertext_range(&self.header, self.object_len, range)?;
        if plan.chunk_count == 0 {
            return Ok(Bytes::new());
        }
        let ciphertext = plan.ciphertext.clone();
        let chunks = if ciphertext.end - ciphertext.start <= READ_PART {
            self.store.get_range(&self.key, ciphertext).await?
        } else {
            // A large span is fetched in parts at once: one S3 stream delivers about
            // 90 MB/s, several deliver several times that.
            let parts: Vec<Range<u64>> = (ciphertext.start..ciphertext.end)
                .step_by(READ_PART as usize)
                .map(|from| from..(from + READ_PART).min(ciphertext.end))
                .collect();
            let fetched = self.store.get_ranges(&self.key, &parts).await?;
            let mut whole = Vec::with_capacity((ciphertext.end - ciphertext.start) as usize);
            for part in fetched {
                whole.extend_from_slice(&part);
            }
            Bytes::from(whole)
        };
        decrypt_owned(&self.cipher, &self.header, &plan, chunks)
    }

    /// The plaintext of each of `plans`, asked of the store in one
    /// [`ObjectStore::get_ranges`] (one open and positioned reads on local files), then
    /// decrypted.
    async fn fetch_together(&self, plans: &[ChunkRange]) -> Result<Vec<Bytes>> {
        let wanted: Vec<Range<u64>> = plans
            .iter()
            .filter(|p| p.chunk_count > 0)
            .map(|p| p.ciphertext.clone())
            .collect();
        let mut chunks = self.store.get_ranges(&self.key, &wanted).await?.into_iter();
        let mut fetched = Vec::with_capacity(plans.len());
        for plan in plans {
            if plan.chunk_count == 0 {
                fetched.push(Bytes::new());
                continue;
            }
            let bytes = chunks
                .next()
                .ok_or_else(|| Error::internal("object store returned too few ranges"))?;
            fetched.push(decrypt_owned(&self.cipher, &self.header, plan, bytes)?);
        }
        Ok(fetched)
    }

    /// The plaintext of each of `plans`, each asked of the store on its own and decrypted
    /// on rayon's pool as soon as it arrives: a large read's decryption (about a
    /// millisecond per MB) runs on every core while its slowest spans are still on
    /// their way, instead of after them on one.
    async fn fetch_streamed(&self, plans: &[ChunkRange]) -> Result<Vec<Bytes>> {
        let cipher = std::sync::Arc::new(self.cipher.clone());
        futures::future::try_join_all(plans.iter().map(|plan| {
            let cipher = cipher.clone();
            async move {
                if plan.chunk_count == 0 {
                    return Ok(Bytes::new());
                }
                let chunks = self
                    .store
                    .get_range(&self.key, plan.ciphertext.clone())
                    .await?;
                let (header, plan) = (self.header.clone(), plan.clone());
                crate::cpu::on_cpu(move || decrypt_owned(&cipher, &header, &plan, chunks)).await
            }
        }))
        .await
    }

    /// Several ranges at once, in the order given: ranges whose chunks touch or lie
    /// within `gap` bytes of each other are fetched as one range (of at most
    /// [`MAX_COALESCED`] bytes: one S3 stream delivers about 90 MB/s, several run side
    /// by side), and the ranges are asked of the store together
    /// ([`ObjectStore::get_ranges`]); a read of a megabyte or more in several spans asks
    /// for each span on its own and decrypts it as it arrives.
    pub async fn read_many(&self, ranges: &[Range<u64>], gap: u64) -> Result<Vec<Bytes>> {
        if let Some(r) = ranges.iter().find(|r| r.start > r.end) {
            return Err(Error::invalid(format!(
                "plaintext range {}..{} is inverted",
                r.start, r.end
            )));
        }
        let mut order: Vec<usize> = (0..ranges.len()).collect();
        order.sort_by_key(|&i| ranges[i].start);
        // Groups of ranges (indexes into `ranges`) read together, with the plaintext span
        // each group covers.
        let mut groups: Vec<(Range<u64>, Vec<usize>)> = Vec::new();
        for i in order {
            let r = &ranges[i];
            match groups.last_mut() {
                Some((span, members))
                    if r.start <= span.end.saturating_add(gap)
                        && r.end.max(span.end) - span.start <= MAX_COALESCED =>
                {
                    span.end = span.end.max(r.end);
                    members.push(i);
                }
                _ => groups.push((r.clone(), vec![i])),
            }
        }
        let plans = groups
            .iter()
            .map(|(span, _)| ciphertext_range(&self.header, self.object_len, span.clone()))
            .collect::<Result<Vec<_>>>()?;
        let spans = plans.iter().filter(|p| p.chunk_count > 0).count();
        let bytes: u64 = plans
            .iter()
            .map(|p| p.ciphertext.end - p.ciphertext.start)
            .sum();
        let fetched = if spans > 1 && bytes >= STREAMED_READ {
            self.fetch_streamed(&plans).await?
        } else {
            self.fetch_together(&plans).await?
        };
        let mut out = vec![Bytes::new(); ranges.len()];
        for ((span, members), bytes) in groups.iter().zip(fetched) {
            for &i in members {
                let r = &ranges[i];
                let from = (r.start - span.start).min(bytes.len() as u64) as usize;
                let to = (r.end.min(span.end) - span.start).min(bytes.len() as u64) as usize;
                out[i] = bytes.slice(from..to.max(from));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::error::ErrorCode;

    fn key(b: u8) -> DataKey {
        DataKey(Zeroizing::new([b; 32]))
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    const CS: usize = 64;

    fn seal(plaintext: &[u8]) -> Vec<u8> {
        encrypt_with_chunk_size(&key(1), b"c/x/seg/1/index.bin", plaintext, CS as u32).unwrap()
    }

    fn open(ct: &[u8]) -> Result<Vec<u8>> {
        decrypt(&key(1), b"c/x/seg/1/index.bin", ct)
    }

    #[track_caller]
    fn assert_auth_fails(r: Result<Vec<u8>>) {
        let e = r.expect_err("decryption must fail");
        assert_eq!(e.code(), ErrorCode::Internal, "{e:?}");
    }

    #[test]
    fn round_trips() {
        for len in [0, 1, CS - 1, CS, CS + 1, 3 * CS + CS / 2, 4 * CS] {
            let p = data(len);
            let ct = seal(&p);
            let chunks = len.div_ceil(CS).max(1);
            assert_eq!(ct.len(), HEADER_LEN + len + chunks * TAG_LEN, "len {len}");
            let header = EnvelopeHeader::parse(&ct).unwrap();
            assert_eq!(header.plaintext_len(ct.len() as u64).unwrap(), len as u64);
            assert_eq!(header.chunk_count(ct.len() as u64).unwrap(), chunks as u64);
            assert_eq!(open(&ct).unwrap(), p, "len {len}");
        }
        let big = data(3 * DEFAULT_CHUNK_SIZE as usize + 5);
        let ct = encrypt(&key(2), b"k", &big);
        assert_eq!(decrypt(&key(2), b"k", &ct).unwrap(), big);
    }

    /// The prefix read with the header is the plaintext's start, whether the chunks fit
    /// the first request (4 KiB and larger) or need a second one (smaller).
    #[tokio::test]
    async fn a_range_reader_opens_with_a_prefix() {
        use crate::storage::memory::MemoryStore;
        let store: std::sync::Arc<dyn ObjectStore> = std::sync::Arc::new(MemoryStore::new());
        let p = data(3 * 4096 + 100);
        for chunk in [64u32, 4096, 65536] {
            let ct = encrypt_with_chunk_size(&key(3), b"obj", &p, chunk).unwrap();
            store.put("obj", Bytes::from(ct)).await.unwrap();
            for prefix in [0u64, 1, 100, 4096, 5000, 12_388, 99_999] {
                let (reader, got) =
                    RangeReader::open_with_prefix(store.clone(), "obj", &key(3), None, prefix)
                        .await
                        .unwrap();
                let end = (prefix as usize).min(p.len());
                assert_eq!(&got[..], &p[..end], "chunk {chunk} prefix {prefix}");
                assert_eq!(reader.read(7..9).await.unwrap(), &p[7..9]);
            }
            assert!(
                RangeReader::open_with_prefix(store.clone(), "obj", &key(4), None, 100)
                    .await
                    .is_err()
            );
        }
    }

    /// A reader told the object's length (the manifest records it) sends no `HEAD`.
    #[tokio::test]
    async fn a_reader_of_an_object_of_known_length_sends_no_head() {
        use std::sync::atomic::Ordering::SeqCst;
        let counting = std::sync::Arc::new(crate::storage::memory::Counting::default());
        let store: std::sync::Arc<dyn ObjectStore> = counting.clone();
        let p = data(3 * DEFAULT_CHUNK_SIZE as usize + 100);
        let ct = encrypt(&key(3), b"obj", &p);
        let len = ct.len() as u64;
        store.put("obj", Bytes::from(ct)).await.unwrap();
        let reader = RangeReader::open_sized(store.clone(), "obj", &key(3), Some(len))
            .await
            .unwrap();
        assert_eq!(
            reader.read(70_000..70_010).await.unwrap(),
            &p[70_000..70_010]
        );
        let (_, prefix) =
            RangeReader::open_with_prefix(store.clone(), "obj", &key(3), Some(len), 100_000)
                .await
                .unwrap();
        assert_eq!(&prefix[..], &p[..100_000]);
        assert_eq!(counting.heads.load(SeqCst), 0);
        // Without the length, the reader asks for it.
        let reader = RangeReader::open_sized(store.clone(), "obj", &key(3), None)
            .await
            .unwrap();
        assert_eq!(reader.len(), p.len() as u64);
        assert_eq!(counting.heads.load(SeqCst), 1);
        // A wrong length is an error, not a panic or wrong bytes.
        for wrong in [len - 1, len + 1, 10] {
            let got =
                match RangeReader::open_sized(store.clone(), "obj", &key(3), Some(wrong)).await {
                    Ok(reader) => reader.read(0..reader.len()).await.map(|b| b.to_vec()),
                    Err(e) => Err(e),
                };
            assert!(got.is_err(), "length {wrong}");
        }
    }

    /// The bytes fetched with the header hold every chunk the prefix touches, so opening
    /// with a prefix is one round trip (a chunk is decrypted whole: a prefix ending inside
    /// a 64 KiB chunk needs all of it).
    #[test]
    fn the_prefix_fetched_with_the_header_holds_whole_chunks() {
        let p = data(5 * DEFAULT_CHUNK_SIZE as usize + 3);
        for chunk in [4096u32, 10_000, DEFAULT_CHUNK_SIZE] {
            let ct = encrypt_with_chunk_size(&key(3), b"obj", &p, chunk).unwrap();
            let header = EnvelopeHeader::parse(&ct[..HEADER_LEN]).unwrap();
            for prefix in [1u64, 100, 4096, 4097, 65_536, 65_537, 200_000, 327_683] {
                let plan = ciphertext_range(&header, ct.len() as u64, 0..prefix).unwrap();
                assert!(
                    plan.ciphertext.end <= HEADER_LEN as u64 + sealed_prefix_len(prefix),
                    "chunk {chunk} prefix {prefix}: {:?}",
                    plan.ciphertext
                );
            }
        }
    }

    #[tokio::test]
    async fn a_range_reader_reads_any_ranges_of_a_stored_envelope() {
        use crate::storage::memory::MemoryStore;
        let store: std::sync::Arc<dyn ObjectStore> = std::sync::Arc::new(MemoryStore::new());
        let p = data(10 * CS + 17);
        let ct = encrypt_with_chunk_size(&key(3), b"obj", &p, CS as u32).unwrap();
        store.put("obj", Bytes::from(ct)).await.unwrap();
        let reader = RangeReader::open(store.clone(), "obj", &key(3))
            .await
            .unwrap();
        assert_eq!(reader.len(), p.len() as u64);
        for (a, b) in [
            (0, 1),
            (5, 200),
            (63, 65),
            (640, 657),
            (0, 657),
            (657, 657),
            (600, 9999),
        ] {
            let got = reader.read(a..b).await.unwrap();
            let b = (b as usize).min(p.len());
            assert_eq!(&got[..], &p[a as usize..b], "{a}..{b}");
        }
        let ranges = vec![300..310, 0..5, 305..400, 650..657, 10..10, 100..164];
        for gap in [0, 64, 10_000] {
            let got = reader.read_many(&ranges, gap).await.unwrap();
            for (r, g) in ranges.iter().zip(&got) {
                assert_eq!(
                    &g[..],
                    &p[r.start as usize..r.end as usize],
                    "{r:?} gap {gap}"
                );
            }
        }
        assert!(reader.read(658..700).await.is_err(), "past the end");
        // Another data key does not open it.
        let wrong = RangeReader::open(store.clone(), "obj", &key(4))
            .await
            .unwrap();
        assert!(wrong.read(0..10).await.is_err());
    }

    #[tokio::test]
    async fn a_range_reader_reads_long_spans_in_parts() {
        use crate::storage::memory::MemoryStore;
        let store: std::sync::Arc<dyn ObjectStore> = std::sync::Arc::new(MemoryStore::new());
        let len = 2 * READ_PART as usize + 70_001;
        let p: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        store
            .put("big", Bytes::from(encrypt(&key(5), b"big", &p)))
            .await
            .unwrap();
        let reader = RangeReader::open(store, "big", &key(5)).await.unwrap();
        assert_eq!(&reader.read(0..len as u64).await.unwrap()[..], &p[..]);
        let (a, b) = (READ_PART - 3, 2 * READ_PART + 9);
        assert_eq!(
            &reader.read(a..b).await.unwrap()[..],
            &p[a as usize..b as usize]
        );
        // Megabytes in several spans: each span is fetched and decrypted on its own.
        let ranges = vec![
            5..700_000,
            1_500_000..1_500_010,
            10..20,
            900_000..2_000_000,
            len as u64 - 5..len as u64,
            3..3,
        ];
        for gap in [0, 1 << 20] {
            let got = reader.read_many(&ranges, gap).await.unwrap();
            for (r, g) in ranges.iter().zip(&got) {
                assert_eq!(&g[..], &p[r.start as usize..r.end as usize], "{r:?}");
            }
        }
        // A tampered span fails the read.
        let mut bad = encrypt(&key(6), b"bad", &p);
        // About plaintext byte 1e6 - 16 per 64 KiB chunk: within 900_000..2_000_000.
        bad[1_000_000] ^= 1;
        let store: std::sync::Arc<dyn ObjectStore> = std::sync::Arc::new(MemoryStore::new());
        store.put("bad", Bytes::from(bad)).await.unwrap();
        let reader = RangeReader::open(store, "bad", &key(6)).await.unwrap();
        assert!(reader.read_many(&ranges, 0).await.is_err());
    }

    #[test]
    fn encryption_is_randomized() {
        let p = data(100);
        assert_ne!(seal(&p), seal(&p));
    }

    #[test]
    fn rejects_tampering() {
        let p = data(3 * CS + CS / 2);
        let ct = seal(&p);
        // Every single-bit flip anywhere, header included.
        for i in 0..ct.len() {
            let mut bad = ct.clone();
            bad[i] ^= 0x01;
            assert!(open(&bad).is_err(), "flip at byte {i} went unnoticed");
        }
        // Truncation: anywhere, and exactly at chunk boundaries.
        for cut in [
            0,
            10,
            HEADER_LEN,
            HEADER_LEN + 1,
            ct.len() - 1,
            ct.len() - TAG_LEN,
        ] {
            assert!(open(&ct[..cut]).is_err(), "truncation to {cut}");
        }
        for chunks in 1..=3 {
            assert_auth_fails(open(&ct[..HEADER_LEN + chunks * (CS + TAG_LEN)]));
        }
        // Appended bytes and an appended copy of a chunk.
        let mut longer = ct.clone();
        longer.push(0);
        assert_auth_fails(open(&longer));
        let mut dup = ct.clone();
        dup.extend_from_slice(&ct[HEADER_LEN..HEADER_LEN + CS + TAG_LEN]);
        assert_auth_fails(open(&dup));
        // Swapping two chunks.
        let s = CS + TAG_LEN;
        let mut swapped = ct.clone();
        let (a, b) = (
            HEADER_LEN..HEADER_LEN + s,
            HEADER_LEN + s..HEADER_LEN + 2 * s,
        );
        let first = ct[a.clone()].to_vec();
        swapped.copy_within(b.clone(), a.start);
        swapped[b].copy_from_slice(&first);
        assert_auth_fails(open(&swapped));
        // Wrong key, wrong associated data (an object moved to another key).
        assert_auth_fails(decrypt(&key(9), b"c/x/seg/1/index.bin", &ct));
        assert_auth_fails(decrypt(&key(1), b"c/x/seg/2/index.bin", &ct));
        // A chunk from another object under the same key does not fit.
        let other = seal(&p);
        let mut spliced = ct.clone();
        spliced[HEADER_LEN..HEADER_LEN + s].copy_from_slice(&other[HEADER_LEN..HEADER_LEN + s]);
        assert_auth_fails(open(&spliced));
        // The empty plaintext still authenticates its one chunk.
        let empty = seal(b"");
        assert_auth_fails(open(&empty[..HEADER_LEN]));
        let mut e2 = empty.clone();
        e2[HEADER_LEN] ^= 1;
        assert_auth_fails(open(&e2));
        assert_eq!(
            open(&ct).unwrap(),
            p,
            "the untouched envelope still decrypts"
        );
    }

    #[test]
    fn rejects_non_envelopes() {
        assert_auth_fails(open(b""));
        assert_auth_fails(open(
            b"PAR1 not an envelope at all, just some parquet bytes......",
        ));
        let mut ct = seal(b"x");
        ct[4] = 2;
        let e = open(&ct).unwrap_err();
        assert!(e.message().contains("version 2"), "{e:?}");
    }

    #[test]
    fn ranged_reads_verify_the_last_chunk() {
        let p = data(3 * CS);
        let ct = seal(&p);
        let header = EnvelopeHeader::parse(&ct).unwrap();
        // Cutting the last chunk off makes chunk 1 "last"; reading it then fails.
        let cut = &ct[..HEADER_LEN + 2 * (CS + TAG_LEN)];
        let range = ciphertext_range(&header, cut.len() as u64, 100..200).unwrap();
        assert!(range.includes_last);
        let bytes = &cut[range.ciphertext.start as usize..range.ciphertext.end as usize];
        assert!(decrypt_range(&key(1), b"c/x/seg/1/index.bin", &header, &range, bytes).is_err());
        // A range of inner chunks still reads.
        let range = ciphertext_range(&header, cut.len() as u64, 0..10).unwrap();
        assert!(!range.includes_last);
        let bytes = &cut[range.ciphertext.start as usize..range.ciphertext.end as usize];
        let got = decrypt_range(&key(1), b"c/x/seg/1/index.bin", &header, &range, bytes).unwrap();
        assert_eq!(got, &p[0..10]);
    }

    #[test]
    fn ranged_read_edges() {
        let p = data(2 * CS + 3);
        let ct = seal(&p);
        let header = EnvelopeHeader::parse(&ct).unwrap();
        let len = ct.len() as u64;
        let r = ciphertext_range(&header, len, 0..u64::MAX).unwrap();
        assert_eq!(r.ciphertext, HEADER_LEN as u64..len);
        assert_eq!(r.plaintext, 0..p.len() as u64);
        let r = ciphertext_range(&header, len, p.len() as u64..p.len() as u64 + 5).unwrap();
        assert_eq!(r.chunk_count, 0);
        let e = ciphertext_range(&header, len, p.len() as u64 + 1..p.len() as u64 + 5);
        assert_eq!(e.unwrap_err().code(), ErrorCode::InvalidArgument);
        #[allow(clippy::reversed_empty_ranges)]
        let e = ciphertext_range(&header, len, 5..4);
        assert_eq!(e.unwrap_err().code(), ErrorCode::InvalidArgument);
        // Wrong number of bytes handed in.
        let r = ciphertext_range(&header, len, 0..1).unwrap();
        let short = &ct[r.ciphertext.start as usize..r.ciphertext.end as usize - 1];
        assert!(decrypt_range(&key(1), b"c/x/seg/1/index.bin", &header, &r, short).is_err());
    }

    #[tokio::test]
    async fn read_range_from_a_store() {
        let store = crate::storage::memory::MemoryStore::new();
        let p = data(5 * DEFAULT_CHUNK_SIZE as usize / 2);
        let k = key(3);
        let ct = encrypt(&k, b"c/1/log/a", &p);
        store.put("c/1/log/a", Bytes::from(ct)).await.unwrap();
        let got = read_range(&store, "c/1/log/a", &k, 70_000..140_000)
            .await
            .unwrap();
        assert_eq!(&got[..], &p[70_000..140_000]);
        let got = read_range(&store, "c/1/log/a", &k, 0..u64::MAX)
            .await
            .unwrap();
        assert_eq!(&got[..], &p[..]);
        // The object key is the associated data: a copy under another key fails.
        let copy = store.get("c/1/log/a").await.unwrap();
        store.put("c/2/log/a", copy).await.unwrap();
        assert!(read_range(&store, "c/2/log/a", &k, 0..10).await.is_err());
    }

    proptest! {
        #[test]
        fn ranged_decrypt_matches_slice(
            len in 0usize..(5 * CS),
            a in 0usize..(6 * CS),
            b in 0usize..(6 * CS),
            cs in prop::sample::select(vec![1u32, 7, CS as u32, 100]),
        ) {
            let p = data(len);
            let ct = encrypt_with_chunk_size(&key(4), b"aad", &p, cs).unwrap();
            let header = EnvelopeHeader::parse(&ct[..HEADER_LEN]).unwrap();
            let (start, end) = (a.min(b) as u64, a.max(b) as u64);
            match ciphertext_range(&header, ct.len() as u64, start..end) {
                Ok(r) => {
                    let bytes = &ct[r.ciphertext.start as usize..r.ciphertext.end as usize];
                    let got = decrypt_range(&key(4), b"aad", &header, &r, bytes).unwrap();
                    let end = end.min(len as u64) as usize;
                    prop_assert_eq!(got, &p[start as usize..end]);
                }
                Err(e) => {
                    prop_assert!(start > len as u64);
                    prop_assert_eq!(e.code(), ErrorCode::InvalidArgument);
                }
            }
        }
    }
}
