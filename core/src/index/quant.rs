//! 8-bit scalar codes of the stored vectors: what a loaded index keeps in memory
//! instead of the f32 vectors (a quarter of the size; a 384-dimension row is 6 cache
//! lines instead of 24), and what the graph walk compares. Distances from codes are
//! approximate: the final candidates are re-scored with the exact f32 vectors, read from
//! the segment object by range, so returned distances are always exact.
//!
//! Each row is scaled by its own largest magnitude (`code = round(v · 127 / max|v|)`);
//! cosine rows are normalized first, so their codes approximate the unit vector.
//!
//! Serialized (inside the index format, see [`super`]) as: `scales` (n f32), `sq_norms`
//! (n f32, l2 only), `codes` (n·dim i8), row-major.

use multiversion::multiversion;

use super::graph::{corrupt, Reader};
use crate::error::Result;
use crate::model::Space;

/// Accumulator lanes of the integer kernel.
const LANES: usize = 32;

#[derive(Debug, Clone, Default)]
pub(crate) struct Codes {
    dim: usize,
    codes: Vec<i8>,
    /// Per row, the factor that turns a code back into a value.
    scales: Vec<f32>,
    /// Per row, `‖v‖²` (l2 only).
    sq_norms: Vec<f32>,
}

/// A query encoded like the rows.
pub(crate) struct QuantQuery {
    space: Space,
    codes: Vec<i8>,
    scale: f32,
    sq_norm: f32,
}

impl QuantQuery {
    /// Quantizes `query`, as prepared by [`super::distance::Query`] (normalized for cosine).
    pub(crate) fn new(space: Space, query: &[f32]) -> Self {
        let mut codes = Vec::with_capacity(query.len());
        let scale = encode(query, &mut codes);
        let sq_norm = if space == Space::L2 {
            super::distance::dot(query, query)
        } else {
            0.0
        };
        Self {
            space,
            codes,
            scale,
            sq_norm,
        }
    }
}

impl QuantQuery {
    /// Approximately Chroma's distance from the query to a row coded as `codes` with
    /// `scale` (and `‖v‖²` = `sq_norm()`, asked for l2 only).
    #[inline]
    fn distance<B: CodeByte>(&self, codes: &[B], scale: f32, sq_norm: impl Fn() -> f32) -> f32 {
        let dot = dot_i8(&self.codes, codes) as f32 * self.scale * scale;
        match self.space {
            Space::Cosine | Space::Ip => 1.0 - dot,
            Space::L2 => self.sq_norm + sq_norm() - 2.0 * dot,
        }
    }
}

fn encode(v: &[f32], out: &mut Vec<i8>) -> f32 {
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    if max == 0.0 || !max.is_finite() {
        out.extend(std::iter::repeat_n(0, v.len()));
        return 0.0;
    }
    let to_code = 127.0 / max;
    out.extend(
        v.iter()
            .map(|x| (x * to_code).round().clamp(-127.0, 127.0) as i8),
    );
    max / 127.0
}

impl Codes {
    /// Codes of `data` (row-major, `dim` wide) for `space`.
    pub(crate) fn new(space: Space, dim: usize, data: &[f32]) -> Self {
        if dim == 0 {
            return Self::default();
        }
        let n = data.len() / dim;
        let mut codes = Vec::with_capacity(n * dim);
        let mut scales = Vec::with_capacity(n);
        let mut sq_norms = Vec::new();
        for v in data.chunks_exact(dim) {
            let scale = match space {
                Space::Cosine => encode(&super::distance::normalized(v), &mut codes),
                Space::L2 | Space::Ip => encode(v, &mut codes),
            };
            scales.push(scale);
            if space == Space::L2 {
                sq_norms.push(super::distance::dot(v, v));
            }
        }
        Self {
            dim,
            codes,
            scales,
            sq_norms,
        }
    }

    #[inline]
    fn row(&self, row: u32) -> &[i8] {
        let start = row as usize * self.dim;
        &self.codes[start..start + self.dim]
    }

    #[inline]
    pub(crate) fn prefetch(&self, row: u32) {
        let codes = self.row(row);
        // One hint per cache line (64 codes).
        for line in codes.chunks(64) {
            super::distance::prefetch_bytes(line);
        }
    }

    /// Approximately Chroma's distance from the query to a row.
    #[inline]
    pub(crate) fn distance(&self, q: &QuantQuery, row: u32) -> f32 {
        let r = row as usize;
        q.distance(self.row(row), self.scales[r], || self.sq_norms[r])
    }

    /// The codes of renumbered rows: new row `i` is old row `order[i]`.
    pub(crate) fn permuted(&self, order: &[u32]) -> Self {
        let mut codes = Vec::with_capacity(self.codes.len());
        for &old in order {
            codes.extend_from_slice(self.row(old));
        }
        let pick = |values: &[f32]| -> Vec<f32> {
            if values.is_empty() {
                return Vec::new();
            }
            order.iter().map(|&old| values[old as usize]).collect()
        };
        Self {
            dim: self.dim,
            codes,
            scales: pick(&self.scales),
            sq_norms: pick(&self.sq_norms),
        }
    }

    pub(crate) fn memory_bytes(&self) -> usize {
        self.codes.capacity() + (self.scales.capacity() + self.sq_norms.capacity()) * 4
    }

    /// Rows coded.
    pub(crate) fn len(&self) -> usize {
        self.scales.len()
    }

    /// Bytes [`Codes::write`] appends for `n` rows of `dim` values.
    pub(crate) fn serialized_len(space: Space, n: usize, dim: usize) -> usize {
        let norms = if space == Space::L2 { n } else { 0 };
        4 * (n + norms) + n * dim
    }

    /// Appends the serialized codes (see the module docs).
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        out.reserve(4 * (self.scales.len() + self.sq_norms.len()) + self.codes.len());
        for v in self.scales.iter().chain(&self.sq_norms) {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend(self.codes.iter().map(|&c| c as u8));
    }

    /// Reads what [`Codes::write`] wrote for `n` rows of `dim` values in `space`; scales
    /// must be finite and non-negative, squared norms non-negative (+∞ included: the
    /// squared norm of a huge finite vector overflows, as it does when it is coded).
    pub(crate) fn read(r: &mut Reader<'_>, space: Space, n: usize, dim: usize) -> Result<Self> {
        if dim == 0 {
            return Ok(Self::default());
        }
        let scales = r.f32s(n, "code scales")?;
        let sq_norms = if space == Space::L2 {
            r.f32s(n, "squared norms")?
        } else {
            Vec::new()
        };
        if scales.iter().any(|x| !x.is_finite() || *x < 0.0)
            || sq_norms.iter().any(|x| x.is_nan() || *x < 0.0)
        {
            return Err(corrupt("negative or non-finite code scale or norm"));
        }
        let len = n
            .checked_mul(dim)
            .ok_or_else(|| corrupt("codes too large"))?;
        let codes = r.take(len, "codes")?.iter().map(|&b| b as i8).collect();
        Ok(Self {
            dim,
            codes,
            scales,
            sq_norms,
        })
    }
}

/// The serialized codes of a run of rows, scored where they were read (the cold path
/// scores each probed partition's bytes as fetched, without copying them into a
/// [`Codes`]). Checked as [`Codes::read`] checks.
pub(crate) struct CodesRef<'a> {
    dim: usize,
    codes: &'a [u8],
    scales: Vec<f32>,
    sq_norms: Vec<f32>,
}

impl<'a> CodesRef<'a> {
    /// `n` rows of `dim` codes in `space` from their three sections: `scales` (n f32),
    /// `sq_norms` (n f32; l2 only, else empty) and `codes` (n·dim bytes).
    pub(crate) fn new(
        space: Space,
        n: usize,
        dim: usize,
        scales: &[u8],
        sq_norms: &[u8],
        codes: &'a [u8],
    ) -> Result<Self> {
        let norms = if space == Space::L2 { n } else { 0 };
        if scales.len() != 4 * n
            || sq_norms.len() != 4 * norms
            || Some(codes.len()) != n.checked_mul(dim)
        {
            return Err(corrupt(format!(
                "the codes of a run of {n} rows have the wrong size"
            )));
        }
        let floats = |bytes: &[u8]| -> Vec<f32> {
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().expect("chunks of 4 bytes")))
                .collect()
        };
        let (scales, sq_norms) = (floats(scales), floats(sq_norms));
        if scales.iter().any(|x| !x.is_finite() || *x < 0.0)
            || sq_norms.iter().any(|x| x.is_nan() || *x < 0.0)
        {
            return Err(corrupt("negative or non-finite code scale or norm"));
        }
        Ok(Self {
            dim,
            codes,
            scales,
            sq_norms,
        })
    }

    /// As [`Codes::distance`], for the `row`-th row of the run.
    #[inline]
    pub(crate) fn distance(&self, q: &QuantQuery, row: usize) -> f32 {
        let codes = &self.codes[row * self.dim..(row + 1) * self.dim];
        q.distance(codes, self.scales[row], || self.sq_norms[row])
    }
}

/// A code as held in memory (`i8`) or as read from an object (its byte, `u8`).
trait CodeByte: Copy {
    fn code(self) -> i8;
}

impl CodeByte for i8 {
    #[inline(always)]
    fn code(self) -> i8 {
        self
    }
}

impl CodeByte for u8 {
    #[inline(always)]
    fn code(self) -> i8 {
        self as i8
    }
}

/// `Σ aᵢ·bᵢ` over i8 codes, in i32 (exact: 127² · 65,536 dimensions fits). Compiled for
/// each x86-64 level and dispatched at run time, as the f32 kernels (see
/// [`super::distance`]).
#[multiversion(targets("x86_64+avx2+fma", "x86_64+sse4.1"))]
fn dot_i8<B: CodeByte>(a: &[i8], b: &[B]) -> i32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0i32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        let x: &[i8; LANES] = x.try_into().expect("chunks_exact yields LANES codes");
        let y: &[B; LANES] = y.try_into().expect("chunks_exact yields LANES codes");
        for i in 0..LANES {
            acc[i] += i32::from(i16::from(x[i]) * i16::from(y[i].code()));
        }
    }
    let tail: i32 = ra
        .iter()
        .zip(rb)
        .map(|(x, y)| i32::from(*x) * i32::from(y.code()))
        .sum();
    acc.iter().sum::<i32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::distance;

    #[test]
    fn approximate_distances_are_close_to_exact_ones() {
        let dim = 48;
        let data: Vec<f32> = (0..dim * 20)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect();
        let q: Vec<f32> = (0..dim)
            .map(|i| ((i * 13 % 17) as f32 - 8.0) / 4.0)
            .collect();
        for space in [Space::L2, Space::Cosine, Space::Ip] {
            let codes = Codes::new(space, dim, &data);
            let prepared = match space {
                Space::Cosine => distance::normalized(&q),
                _ => q.clone(),
            };
            let qq = QuantQuery::new(space, &prepared);
            for (row, v) in data.chunks_exact(dim).enumerate() {
                let exact = distance(space, &q, v);
                let approx = codes.distance(&qq, row as u32);
                // The error of a coded dot product scales with the magnitudes involved.
                let magnitude = match space {
                    Space::Cosine => 1.0,
                    Space::L2 | Space::Ip => (distance::dot(&q, &q) * distance::dot(v, v)).sqrt(),
                };
                let tolerance = 0.02 * magnitude;
                assert!(
                    (exact - approx).abs() <= tolerance,
                    "{space:?} row {row}: {exact} vs {approx}"
                );
            }
        }
    }

    /// Codes scored in place, from their serialized sections, give the distances of the
    /// codes read into memory; sections of the wrong size or with a bad scale are errors.
    #[test]
    fn codes_scored_where_they_were_read_match_codes_in_memory() {
        let (n, dim) = (9, 40);
        let data: Vec<f32> = (0..n * dim)
            .map(|i| ((i * 29 % 97) as f32 - 48.0) / 20.0)
            .collect();
        let q: Vec<f32> = (0..dim)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) / 3.0)
            .collect();
        for space in [Space::L2, Space::Cosine, Space::Ip] {
            let codes = Codes::new(space, dim, &data);
            let mut bytes = Vec::new();
            codes.write(&mut bytes);
            let norms = if space == Space::L2 { 4 * n } else { 0 };
            let (scales, rest) = bytes.split_at(4 * n);
            let (sq_norms, coded) = rest.split_at(norms);
            let view = CodesRef::new(space, n, dim, scales, sq_norms, coded).unwrap();
            let prepared = match space {
                Space::Cosine => distance::normalized(&q),
                _ => q.clone(),
            };
            let qq = QuantQuery::new(space, &prepared);
            for row in 0..n {
                assert_eq!(view.distance(&qq, row), codes.distance(&qq, row as u32));
            }
            assert!(CodesRef::new(space, n, dim, scales, sq_norms, &coded[1..]).is_err());
            assert!(CodesRef::new(space, n + 1, dim, scales, sq_norms, coded).is_err());
            let mut bad = scales.to_vec();
            bad[..4].copy_from_slice(&(-1f32).to_le_bytes());
            assert!(CodesRef::new(space, n, dim, &bad, sq_norms, coded).is_err());
        }
    }

    #[test]
    fn huge_vectors_round_trip() {
        // Finite values whose squared norm overflows to +∞ (found by fuzzing).
        let data = [1e30f32, -3e38, 2.0, 1e-30];
        let codes = Codes::new(Space::L2, 2, &data);
        let mut bytes = Vec::new();
        codes.write(&mut bytes);
        let back = Codes::read(&mut Reader::new(&bytes), Space::L2, 2, 2).unwrap();
        assert_eq!(back.sq_norms[0], f32::INFINITY);
        assert_eq!(back.codes, codes.codes);
        let mut bad = bytes.clone();
        bad[8..12].copy_from_slice(&f32::NAN.to_le_bytes());
        assert!(Codes::read(&mut Reader::new(&bad), Space::L2, 2, 2).is_err());
    }

    #[test]
    fn zero_vectors_encode_to_zero() {
        let codes = Codes::new(Space::Cosine, 3, &[0.0, 0.0, 0.0, 1.0, 0.0, 0.0]);
        let qq = QuantQuery::new(Space::Cosine, &[1.0, 0.0, 0.0]);
        assert_eq!(codes.distance(&qq, 0), 1.0);
        assert!(codes.distance(&qq, 1).abs() < 1e-6);
    }

    #[test]
    fn integer_dot_matches_a_plain_sum() {
        let a: Vec<i8> = (0..77).map(|i| (i * 7 % 255 - 127) as i8).collect();
        let b: Vec<i8> = (0..77).map(|i| (i * 11 % 255 - 127) as i8).collect();
        let plain: i32 = a
            .iter()
            .zip(&b)
            .map(|(x, y)| i32::from(*x) * i32::from(*y))
            .sum();
        assert_eq!(dot_i8(&a, &b), plain);
    }
}
