//! End-to-end tests: the HTTP API served on 127.0.0.1:0 in-process, driven with reqwest.

mod http;
