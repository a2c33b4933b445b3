//! Scenarios shared by the end-to-end test targets: each runs over whatever backends a
//! target gives it (local ones in `e2e`, AWS ones on the emulator in `aws`).

pub mod faults;
