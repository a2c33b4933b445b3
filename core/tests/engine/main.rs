//! Integration tests of the engine over the local backends: a model check against a plain
//! in-memory model, recall on the shipped dataset, and crash safety.

mod access;
mod common;
mod compaction_requests;
mod crash;
mod dataset;
mod fork;
mod model_check;
mod recall;
mod search_model;
mod sparse;
