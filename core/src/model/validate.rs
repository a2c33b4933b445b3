//! Validation of names, ids, embeddings, metadata and write batches.
//! (Being written.)
