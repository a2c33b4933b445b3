//! Sparse vectors (Chroma Cloud's `SparseVector`): dimension indices with their values,
//! for keyword-style ranking (BM25, SPLADE) beside the dense embedding.
//!
//! JSON: `{"#type": "sparse_vector", "indices": [u32…], "values": [f32…], "tokens"?: [str…]}`;
//! the form without `#type` is accepted on input, a `#type` other than `sparse_vector` is
//! refused. Valid when the lists have equal lengths and the indices ascend strictly
//! (Chroma's messages). A sparse query scores a stored vector that shares a dimension
//! with it `1 − q·d` (lower is nearer, as every rank value).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::error::{Error, Result};

/// The `#type` tag of a sparse vector in JSON.
pub const SPARSE_VECTOR_TYPE: &str = "sparse_vector";

/// A sparse vector: `values[i]` at dimension `indices[i]`, indices strictly ascending.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SparseVector {
    pub indices: Vec<u32>,
    pub values: Vec<f32>,
    /// The token each dimension stands for, when the embedding function gives them.
    pub tokens: Option<Vec<String>>,
}

fn invalid(detail: impl std::fmt::Display) -> Error {
    Error::invalid(format!("Invalid sparse vector: {detail}"))
}

impl SparseVector {
    /// Whether `v` is an object in the sparse vector shape (tagged, or with `indices` and
    /// `values` and nothing but `tokens` beside them).
    pub fn looks_like(v: &Value) -> bool {
        let Some(o) = v.as_object() else {
            return false;
        };
        o.contains_key("#type")
            || (o.contains_key("indices")
                && o.contains_key("values")
                && o.keys()
                    .all(|k| matches!(k.as_str(), "indices" | "values" | "tokens")))
    }

    /// Parses and validates the JSON form.
    pub fn from_json(v: &Value) -> Result<Self> {
        let v = Self::parse(v)?;
        v.validate()?;
        Ok(v)
    }

    /// Parses the JSON form's structure (types and fields), leaving the rules of
    /// [`SparseVector::validate`] to the caller (as a write validates its metadata).
    pub fn parse(v: &Value) -> Result<Self> {
        let o = v
            .as_object()
            .ok_or_else(|| invalid(format!("expected an object, got {v}")))?;
        if let Some(t) = o.get("#type") {
            if t.as_str() != Some(SPARSE_VECTOR_TYPE) {
                return Err(invalid(format!(
                    "#type must be \"{SPARSE_VECTOR_TYPE}\", got {t}"
                )));
            }
        }
        if let Some(k) = o
            .keys()
            .find(|k| !matches!(k.as_str(), "#type" | "indices" | "values" | "tokens"))
        {
            return Err(invalid(format!("unknown field {k}")));
        }
        let list = |name: &str| {
            o.get(name)
                .and_then(Value::as_array)
                .ok_or_else(|| invalid(format!("{name} must be a list")))
        };
        let indices = list("indices")?
            .iter()
            .map(|i| {
                i.as_u64()
                    .and_then(|i| u32::try_from(i).ok())
                    .ok_or_else(|| invalid(format!("indices must be integers in 0..2^32, got {i}")))
            })
            .collect::<Result<Vec<u32>>>()?;
        let values = list("values")?
            .iter()
            .map(|x| {
                x.as_f64()
                    .map(|x| x as f32)
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| invalid(format!("values must be finite numbers, got {x}")))
            })
            .collect::<Result<Vec<f32>>>()?;
        let tokens = match o.get("tokens") {
            None | Some(Value::Null) => None,
            Some(_) => Some(
                list("tokens")?
                    .iter()
                    .map(|t| {
                        t.as_str()
                            .map(str::to_owned)
                            .ok_or_else(|| invalid(format!("tokens must be strings, got {t}")))
                    })
                    .collect::<Result<Vec<String>>>()?,
            ),
        };
        Ok(SparseVector {
            indices,
            values,
            tokens,
        })
    }

    /// Chroma's rules: equal lengths, strictly ascending indices.
    pub fn validate(&self) -> Result<()> {
        let n = self.indices.len();
        if self.values.len() != n || self.tokens.as_ref().is_some_and(|t| t.len() != n) {
            return Err(Error::invalid(
                "Sparse vector indices, values, and tokens (when present) must have the same length",
            ));
        }
        if self.indices.windows(2).any(|w| w[0] >= w[1]) {
            return Err(Error::invalid(
                "Sparse vector indices must be sorted in strictly ascending order (no duplicates)",
            ));
        }
        Ok(())
    }

    /// The score of `stored` for this query, `1 − q·d`, when the two share a dimension
    /// (`None` otherwise: an inverted index never finds such a vector).
    pub fn score(&self, stored: &SparseVector) -> Option<f32> {
        self.shared_dot(stored).map(|d| 1.0 - d)
    }

    /// `Σ self[i] · other[i]` over the dimensions both have (a merge of the two sorted
    /// index lists, accumulated in f64), `None` when no dimension is shared.
    fn shared_dot(&self, other: &SparseVector) -> Option<f32> {
        let mut shared = false;
        let (mut i, mut j, mut sum) = (0, 0, 0f64);
        while i < self.indices.len() && j < other.indices.len() {
            match self.indices[i].cmp(&other.indices[j]) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => j += 1,
                std::cmp::Ordering::Equal => {
                    sum += f64::from(self.values[i]) * f64::from(other.values[j]);
                    shared = true;
                    i += 1;
                    j += 1;
                }
            }
        }
        shared.then_some(sum as f32)
    }
}

/// The tagged form (what responses and stored metadata carry); values as f32, so they
/// print as given (`0.2`, not `0.20000000298023224`).
impl Serialize for SparseVector {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("#type", SPARSE_VECTOR_TYPE)?;
        map.serialize_entry("indices", &self.indices)?;
        map.serialize_entry("values", &self.values)?;
        if let Some(tokens) = &self.tokens {
            map.serialize_entry("tokens", tokens)?;
        }
        map.end()
    }
}

/// The structure only (see [`SparseVector::parse`]).
impl<'de> Deserialize<'de> for SparseVector {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let v = Value::deserialize(deserializer)?;
        SparseVector::parse(&v).map_err(|e| serde::de::Error::custom(e.message()))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fails(v: Value, message: &str) {
        let e = SparseVector::from_json(&v).unwrap_err();
        assert_eq!(e.message(), message, "{v}");
    }

    #[test]
    fn parses_tagged_and_untagged_forms() {
        let tagged = json!({"#type": "sparse_vector", "indices": [1, 5], "values": [0.5, 0.25]});
        let v = SparseVector::from_json(&tagged).unwrap();
        assert_eq!(v.indices, vec![1, 5]);
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r##"{"#type":"sparse_vector","indices":[1,5],"values":[0.5,0.25]}"##
        );
        let bare = json!({"indices": [1, 5], "values": [0.5, 0.25], "tokens": ["a", "b"]});
        assert!(SparseVector::looks_like(&bare));
        let v = SparseVector::from_json(&bare).unwrap();
        assert_eq!(v.tokens, Some(vec!["a".into(), "b".into()]));
        let back: SparseVector = serde_json::from_str(&serde_json::to_string(&v).unwrap()).unwrap();
        assert_eq!(back, v);
        assert!(!SparseVector::looks_like(
            &json!({"indices": [1], "values": [1], "x": 1})
        ));
        assert!(!SparseVector::looks_like(&json!([1, 2])));
    }

    #[test]
    fn refuses_what_chroma_refuses() {
        fails(
            json!({"indices": [1, 2], "values": [0.5]}),
            "Sparse vector indices, values, and tokens (when present) must have the same length",
        );
        fails(
            json!({"indices": [1], "values": [0.5], "tokens": ["a", "b"]}),
            "Sparse vector indices, values, and tokens (when present) must have the same length",
        );
        fails(
            json!({"indices": [2, 2], "values": [0.5, 0.5]}),
            "Sparse vector indices must be sorted in strictly ascending order (no duplicates)",
        );
        fails(
            json!({"indices": [3, 1], "values": [0.5, 0.5]}),
            "Sparse vector indices must be sorted in strictly ascending order (no duplicates)",
        );
        fails(
            json!({"#type": "dense", "indices": [], "values": []}),
            "Invalid sparse vector: #type must be \"sparse_vector\", got \"dense\"",
        );
        fails(
            json!({"indices": [-1], "values": [0.5]}),
            "Invalid sparse vector: indices must be integers in 0..2^32, got -1",
        );
    }

    #[test]
    fn dot_merges_shared_dimensions() {
        let a = SparseVector {
            indices: vec![1, 3, 7],
            values: vec![1.0, 2.0, 3.0],
            tokens: None,
        };
        let b = SparseVector {
            indices: vec![0, 3, 7, 9],
            values: vec![5.0, 0.5, 2.0, 1.0],
            tokens: None,
        };
        assert_eq!(a.shared_dot(&b), Some(7.0));
        assert_eq!(b.shared_dot(&a), Some(7.0));
        assert_eq!(a.shared_dot(&SparseVector::default()), None);
        assert_eq!(a.score(&b), Some(-6.0));
        assert_eq!(a.score(&SparseVector::default()), None);
    }
}
