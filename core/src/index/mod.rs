//! The vector index. (Being written.)
