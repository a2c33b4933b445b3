#!/bin/sh
# The RUSTC_WORKSPACE_WRAPPER of scripts/test.sh: cargo runs it instead of rustc for the
# workspace's own crates (dependencies are compiled by plain rustc), so one build both
# compiles the tests and checks clippy's lints with warnings denied — the same lints as
# `cargo clippy --all-targets -- -D warnings`, without clippy's separate check build of
# every dependency. Called as `clippy-driver.sh <path of rustc> <rustc arguments…>`.
exec clippy-driver "$@" -D warnings
