//! The HTTP API over the local backends, exercised route by route.

mod auth;
mod collections;
mod filters;
mod fork;
mod harness;
mod records;
mod schema;
mod search;
mod security;
mod spann;
mod system;
