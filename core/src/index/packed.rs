//! The f32 vectors of an index object, stored losslessly in fewer bytes (format 5).
//!
//! An f32's top byte is its sign and the high seven bits of its exponent. Embedding
//! values are small and similar in magnitude, so a segment's vectors use only a few
//! dozen of the 256 possible top bytes (`scripts/bench-scale.sh 100000`, sentence
//! embeddings and mixes of them: under 64, so 6 bits name one). A
//! segment lists the top bytes its vectors use, in a table of `2^bits` entries, and
//! stores each value as its low three bytes plus the `bits`-bit index of its top byte in
//! that table. Every row has the same width, so one row is still one range of the
//! object; nothing is lost (the bits of every value come back exactly, `-0.0` and
//! subnormals included).
//!
//! Per row, `3·dim` bytes (byte 0, 1 and 2 of each value, value by value), then the
//! `dim` top-byte indices packed least significant bit first, `ceil(bits·dim / 8)`
//! bytes. With 6 bits at 384 dimensions a row takes 1,440 bytes instead of 1,536.
//! Formats before 5 store plain little-endian f32 ([`VectorCodec::plain`]).

use super::graph::{corrupt, Reader};
use crate::error::Result;

/// How one index object stores its f32 vectors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VectorCodec {
    dim: usize,
    layout: Layout,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Layout {
    /// Little-endian f32, `4·dim` bytes a row (formats 1–4).
    Plain,
    /// Low three bytes, then `bits`-bit indices into `table` (`2^bits` entries).
    Packed { bits: u32, table: Vec<u8> },
}

impl VectorCodec {
    /// Plain little-endian f32 (formats 1–4).
    pub(super) fn plain(dim: usize) -> Self {
        Self {
            dim,
            layout: Layout::Plain,
        }
    }

    /// The packed codec that fits every value of `data` (`dim` values a row): the top
    /// bytes it uses, in ascending order, with as few index bits as they need.
    pub(super) fn fit(dim: usize, data: &[f32]) -> Self {
        let mut used = [false; 256];
        for x in data {
            used[(x.to_bits() >> 24) as usize] = true;
        }
        let mut table: Vec<u8> = (0..=255u8).filter(|&b| used[b as usize]).collect();
        let bits = match table.len() {
            0 | 1 => 0,
            m => usize::BITS - (m - 1).leading_zeros(),
        };
        table.resize(1 << bits, 0);
        Self {
            dim,
            layout: Layout::Packed { bits, table },
        }
    }

    /// Bits of a packed codec's top-byte index (what format 5's header records);
    /// `None` for plain f32.
    pub(super) fn bits(&self) -> Option<u32> {
        match &self.layout {
            Layout::Plain => None,
            Layout::Packed { bits, .. } => Some(*bits),
        }
    }

    /// Bytes of the table a packed codec writes into the head (`2^bits`).
    pub(super) fn table_len(bits: u32) -> usize {
        1 << bits
    }

    /// Writes a packed codec's table (nothing for plain f32).
    pub(super) fn write_table(&self, out: &mut Vec<u8>) {
        if let Layout::Packed { table, .. } = &self.layout {
            out.extend_from_slice(table);
        }
    }

    /// Reads the table of a packed codec of `bits` index bits (at most 8).
    pub(super) fn read_table(r: &mut Reader<'_>, dim: usize, bits: u32) -> Result<Self> {
        if bits > 8 {
            return Err(corrupt(format!("{bits} bits per top byte")));
        }
        let table = r.take(Self::table_len(bits), "top-byte table")?.to_vec();
        Ok(Self {
            dim,
            layout: Layout::Packed { bits, table },
        })
    }

    /// Bytes one row takes.
    pub fn row_len(&self) -> usize {
        Self::row_len_of(self.dim, self.bits())
    }

    /// Bytes a row of `dim` values takes with `bits` index bits (`None`: plain f32).
    pub(super) fn row_len_of(dim: usize, bits: Option<u32>) -> usize {
        match bits {
            None => 4 * dim,
            Some(bits) => 3 * dim + (bits as usize * dim).div_ceil(8),
        }
    }

    /// Appends the rows of `data` (`dim` values each), encoded.
    pub(super) fn encode(&self, data: &[f32], out: &mut Vec<u8>) {
        let Layout::Packed { bits, table } = &self.layout else {
            for x in data {
                out.extend_from_slice(&x.to_le_bytes());
            }
            return;
        };
        let mut index = [0u8; 256];
        for (i, &b) in table.iter().enumerate() {
            index[b as usize] = i as u8;
        }
        for row in data.chunks_exact(self.dim.max(1)) {
            for x in row {
                out.extend_from_slice(&x.to_le_bytes()[..3]);
            }
            let (mut acc, mut held) = (0u64, 0u32);
            for x in row {
                acc |= u64::from(index[(x.to_bits() >> 24) as usize]) << held;
                held += bits;
                while held >= 8 {
                    out.push(acc as u8);
                    acc >>= 8;
                    held -= 8;
                }
            }
            if held > 0 {
                out.push(acc as u8);
            }
        }
    }

    /// Appends the values of the encoded rows in `bytes` (whole rows) to `out`. Corrupt
    /// (an error, never a panic): a partial row, or a value that is not finite.
    pub fn decode(&self, bytes: &[u8], out: &mut Vec<f32>) -> Result<()> {
        let width = self.row_len();
        if width == 0 || !bytes.len().is_multiple_of(width) {
            return if bytes.is_empty() {
                Ok(())
            } else {
                Err(corrupt(format!(
                    "{} bytes of vectors is not a whole number of {width}-byte rows",
                    bytes.len()
                )))
            };
        }
        out.reserve(bytes.len() / width * self.dim);
        let start = out.len();
        match &self.layout {
            Layout::Plain => out.extend(
                bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            ),
            Layout::Packed { bits, table } => {
                let mask = (1u64 << bits) - 1;
                for row in bytes.chunks_exact(width) {
                    let (low, indices) = row.split_at(3 * self.dim);
                    let mut next = indices.iter();
                    let (mut acc, mut held) = (0u64, 0u32);
                    for l in low.chunks_exact(3) {
                        while held < *bits {
                            acc |= u64::from(*next.next().unwrap_or(&0)) << held;
                            held += 8;
                        }
                        let top = table[(acc & mask) as usize];
                        acc >>= bits;
                        held -= bits;
                        out.push(f32::from_le_bytes([l[0], l[1], l[2], top]));
                    }
                }
            }
        }
        if out[start..].iter().any(|x| !x.is_finite()) {
            return Err(corrupt("non-finite vector value"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(dim: usize, data: &[f32]) -> VectorCodec {
        let codec = VectorCodec::fit(dim, data);
        let mut bytes = Vec::new();
        codec.encode(data, &mut bytes);
        assert_eq!(bytes.len(), data.len() / dim * codec.row_len());
        let mut back = Vec::new();
        codec.decode(&bytes, &mut back).unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back), bits(data));
        // Any one row decodes alone, from its own range.
        let w = codec.row_len();
        for (i, row) in data.chunks_exact(dim).enumerate() {
            let mut one = Vec::new();
            codec.decode(&bytes[i * w..(i + 1) * w], &mut one).unwrap();
            assert_eq!(bits(&one), bits(row));
        }
        codec
    }

    #[test]
    fn embedding_like_values_take_few_bits_and_come_back_exactly() {
        // Unit vectors' values: a handful of exponents, both signs, a zero, a -0.0 and a
        // subnormal.
        let dim = 7;
        let data = [
            0.051, -0.2, 0.0, -0.0, 1.0e-40, 0.3, -0.0007, 0.12, -0.5, 0.25, 0.051, 0.0, 0.06,
            -0.01,
        ];
        let codec = round_trip(dim, &data);
        let distinct = data
            .iter()
            .map(|x| x.to_bits() >> 24)
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        assert!(distinct <= 1 << codec.bits().unwrap());
        assert!(distinct > 1 << (codec.bits().unwrap() - 1));
        assert!(codec.row_len() < 4 * dim);
    }

    #[test]
    fn one_top_byte_takes_no_index_bits_and_all_256_take_eight() {
        let same = round_trip(3, &[0.3, 0.26, 0.4]);
        assert_eq!(same.bits(), Some(0));
        assert_eq!(same.row_len(), 9);
        let every: Vec<f32> = (0..=255u32)
            .map(|b| f32::from_bits(b << 24 | 0x12_3456))
            .filter(|x| x.is_finite())
            .collect();
        let codec = round_trip(every.len(), &every);
        assert_eq!(codec.bits(), Some(8));
        assert_eq!(codec.row_len(), 4 * every.len());
    }

    #[test]
    fn a_partial_row_or_a_non_finite_value_is_corrupt() {
        let data = [0.1f32, -0.2, 0.3, 0.4];
        let codec = VectorCodec::fit(2, &data);
        let mut bytes = Vec::new();
        codec.encode(&data, &mut bytes);
        let mut out = Vec::new();
        assert!(codec.decode(&bytes[..bytes.len() - 1], &mut out).is_err());
        // A top byte of all ones (exponent 255) read through a table that holds it.
        let codec = VectorCodec {
            dim: 1,
            layout: Layout::Packed {
                bits: 0,
                table: vec![0x7f],
            },
        };
        assert!(codec.decode(&[0, 0, 0x80], &mut out).is_err());
        let plain = VectorCodec::plain(1);
        assert!(plain.decode(&f32::NAN.to_le_bytes(), &mut out).is_err());
    }

    proptest! {
        #[test]
        fn any_finite_values_round_trip(
            dim in 1usize..40,
            rows in 1usize..6,
            seed in any::<u64>(),
            wide in any::<bool>(),
        ) {
            let mut state = seed | 1;
            let data: Vec<f32> = (0..dim * rows)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let x = if wide {
                        f32::from_bits(state as u32)
                    } else {
                        (state % 2001) as f32 / 1000.0 - 1.0
                    };
                    if x.is_finite() { x } else { 0.5 }
                })
                .collect();
            round_trip(dim, &data);
        }
    }
}
