//! Chroma's distance functions and the kernels behind them.
//!
//! The kernels are plain loops over 16 independent accumulators, which LLVM turns into
//! SIMD code in optimized builds (two 8-lane AVX registers with AVX2, four NEON ones on
//! arm64) without target-specific code of our own.
//!
//! The binaries are built for baseline x86-64, so that they run on any x86-64 CPU. Each
//! kernel is compiled several times, for AVX2 (x86-64-v3), SSE4.1 (x86-64-v2) and the
//! baseline, and [`multiversion`] calls the best one the CPU has (detected once, at the
//! first call). Every version adds the same lanes in the same order and Rust never fuses
//! a multiply and an add, so all versions give the same bits.

use multiversion::multiversion;

use crate::model::Space;

/// Accumulator lanes of the kernels.
const LANES: usize = 16;

/// `Σ aᵢ·bᵢ`.
#[multiversion(targets("x86_64+avx2+fma", "x86_64+sse4.1"))]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        // Fixed-size arrays let LLVM use full-width vector loads (ymm with AVX2);
        // indexing the slices directly left it with 2-lane loads and shuffles.
        let (x, y) = (lanes(x), lanes(y));
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    for (i, (x, y)) in ra.iter().zip(rb).enumerate() {
        acc[i] += x * y;
    }
    reduce(acc)
}

/// `Σ (aᵢ−bᵢ)²`.
#[multiversion(targets("x86_64+avx2+fma", "x86_64+sse4.1"))]
pub(crate) fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        let (x, y) = (lanes(x), lanes(y));
        for i in 0..LANES {
            let d = x[i] - y[i];
            acc[i] += d * d;
        }
    }
    for (i, (x, y)) in ra.iter().zip(rb).enumerate() {
        let d = x - y;
        acc[i] += d * d;
    }
    reduce(acc)
}

/// A chunk from `chunks_exact(LANES)` as an array (the length always matches).
#[inline(always)]
fn lanes(chunk: &[f32]) -> &[f32; LANES] {
    chunk
        .try_into()
        .expect("chunks_exact yields LANES elements")
}

/// Hints the CPU to start loading the cache line holding `line`. Graph search touches
/// rows in an order the hardware prefetcher cannot guess; asking for the next few
/// neighbours' rows before computing any distance overlaps their memory latency.
#[inline(always)]
pub(crate) fn prefetch_bytes(line: &[i8]) {
    prefetch_line(line.as_ptr());
}

#[inline(always)]
fn prefetch_line(address: *const i8) {
    #[cfg(target_arch = "x86_64")]
    #[allow(unsafe_code)]
    // SAFETY: a prefetch is only a hint: it has no architectural effect, reads nothing the
    // program can observe and cannot fault, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(address);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}

/// Pairwise sum of the accumulators (fixed order, so results are reproducible).
#[inline]
fn reduce(acc: [f32; LANES]) -> f32 {
    let mut half = [0f32; LANES / 2];
    for i in 0..LANES / 2 {
        half[i] = acc[i] + acc[i + LANES / 2];
    }
    let mut quarter = [0f32; LANES / 4];
    for i in 0..LANES / 4 {
        quarter[i] = half[i] + half[i + LANES / 4];
    }
    (quarter[0] + quarter[2]) + (quarter[1] + quarter[3])
}

/// `1/‖v‖`, or 0 for the zero vector (which then has cosine distance 1 to everything,
/// as in hnswlib, which divides by `‖v‖ + 1e-30`).
#[inline]
pub(crate) fn inv_norm(v: &[f32]) -> f32 {
    let norm = dot(v, v).sqrt();
    if norm > 0.0 && norm.is_finite() {
        1.0 / norm
    } else {
        0.0
    }
}

/// `v / ‖v‖` (the zero vector stays zero).
pub(crate) fn normalized(v: &[f32]) -> Vec<f32> {
    let inv = inv_norm(v);
    v.iter().map(|x| x * inv).collect()
}

/// A query prepared once for many distance evaluations: normalized for cosine.
pub(crate) struct Query<'a> {
    space: Space,
    values: std::borrow::Cow<'a, [f32]>,
}

impl<'a> Query<'a> {
    pub(crate) fn new(space: Space, query: &'a [f32]) -> Self {
        let values = match space {
            Space::Cosine => std::borrow::Cow::Owned(normalized(query)),
            Space::L2 | Space::Ip => std::borrow::Cow::Borrowed(query),
        };
        Self { space, values }
    }

    /// The prepared values (normalized for cosine).
    pub(crate) fn values(&self) -> &[f32] {
        &self.values
    }

    pub(crate) fn space(&self) -> Space {
        self.space
    }

    /// Chroma's distance from this query to `v`, whose `1/‖v‖` is `inv_norm_v`
    /// (only read for cosine).
    #[inline]
    pub(crate) fn distance_to(&self, v: &[f32], inv_norm_v: f32) -> f32 {
        match self.space {
            Space::L2 => l2_squared(&self.values, v),
            Space::Cosine => 1.0 - dot(&self.values, v) * inv_norm_v,
            Space::Ip => 1.0 - dot(&self.values, v),
        }
    }
}

/// Chroma's distance between `a` (the query) and `b`:
/// `l2` = squared Euclidean (no square root), `cosine` = `1 − a·b/(‖a‖‖b‖)`,
/// `ip` = `1 − a·b` (may be negative).
///
/// Bit-identical to the distances [`super::HnswIndex::search`] and
/// [`super::HnswIndex::exact`] return for the same query and stored vector.
pub fn distance(space: Space, a: &[f32], b: &[f32]) -> f32 {
    let inv_b = match space {
        Space::Cosine => inv_norm(b),
        Space::L2 | Space::Ip => 1.0,
    };
    Query::new(space, a).distance_to(b, inv_b)
}

/// Orders distances totally for heaps and sorting; NaN (only reachable through f32
/// overflow of huge finite inputs) sorts last, after +∞.
#[inline]
pub(crate) fn sort_key(d: f32) -> f32 {
    if d.is_nan() {
        f32::INFINITY
    } else {
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_dot(a: &[f32], b: &[f32]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| f64::from(*x) * f64::from(*y))
            .sum()
    }

    #[test]
    fn chroma_probe_values() {
        // api §6 (core/src/api/mod.rs): query [0, 0.5] against [3, 4] and [1, 0].
        let q = [0.0, 0.5];
        let (far, near) = ([3.0, 4.0], [1.0, 0.0]);
        assert_eq!(distance(Space::L2, &q, &near), 1.25);
        assert_eq!(distance(Space::L2, &q, &far), 21.25);
        assert_eq!(distance(Space::Cosine, &q, &far), 0.199_999_99);
        assert!((distance(Space::Cosine, &q, &far) - 0.2).abs() < 1e-6);
        assert_eq!(distance(Space::Cosine, &q, &near), 1.0);
        assert_eq!(distance(Space::Ip, &q, &far), -1.0);
        assert_eq!(distance(Space::Ip, &q, &near), 1.0);
    }

    #[test]
    fn kernels_match_naive_sums_at_every_length() {
        for n in 0..70 {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let d = dot(&a, &b) as f64;
            assert!((d - naive_dot(&a, &b)).abs() < 1e-4, "dot at n={n}");
            let l2: f64 = a
                .iter()
                .zip(&b)
                .map(|(x, y)| f64::from(x - y).powi(2))
                .sum();
            assert!((l2_squared(&a, &b) as f64 - l2).abs() < 1e-4, "l2 at n={n}");
        }
    }

    #[test]
    fn zero_vectors_have_cosine_distance_one() {
        assert_eq!(distance(Space::Cosine, &[0.0, 0.0], &[1.0, 2.0]), 1.0);
        assert_eq!(distance(Space::Cosine, &[1.0, 2.0], &[0.0, 0.0]), 1.0);
        assert_eq!(distance(Space::Cosine, &[0.0, 0.0], &[0.0, 0.0]), 1.0);
    }

    #[test]
    fn cosine_of_a_vector_with_itself_is_about_zero() {
        let v = [0.3, -1.7, 2.2, 0.01, 5.0];
        assert!(distance(Space::Cosine, &v, &v).abs() < 1e-6);
        let scaled: Vec<f32> = v.iter().map(|x| x * 10.0).collect();
        assert!(distance(Space::Cosine, &v, &scaled).abs() < 1e-6);
    }
}
