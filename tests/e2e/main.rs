//! End-to-end tests over the local backends: the HTTP API served on 127.0.0.1:0
//! in-process, driven with reqwest, and the engine under injected backend failures.

mod faults;
mod http;
