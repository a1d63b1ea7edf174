//! Fuzzes the agent's `:authority` normalizer
//! (agent/transport/h2_shim/authority.rs) with a client preface and frames
//! whose header blocks are arbitrary. The input format and the checks are in
//! agent/transport/h2_shim/authority/fuzz_input.rs, which `cargo test` also
//! runs on the seeds.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The normalizer and the frame headers it reads, as siblings the way the
// agent has them (`super::frame`), and the names the shared input module
// takes from its parent (`super::{Normalizer, MAX_FRAME}`).
#[allow(dead_code)]
#[path = "../../agent/transport/h2_shim/frame.rs"]
mod frame;
#[allow(dead_code)]
#[path = "../../agent/transport/h2_shim/authority.rs"]
mod authority;
use authority::{Normalizer, MAX_FRAME};
#[path = "../../agent/transport/h2_shim/authority/fuzz_input.rs"]
mod authority_fuzz;

fuzz_target!(|data: &[u8]| {
    authority_fuzz::check(data);
});
