//! Fuzzes the agent's `:authority` normalizer
//! (agent/transport/authority.rs) with a client preface and frames whose
//! header blocks are arbitrary. The input format and the checks are in
//! agent/transport/authority/fuzz_input.rs, which `cargo test` also runs on
//! the seeds.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The normalizer where the agent has it (`crate::transport::authority`),
// with the frame headers it reads (`crate::transport::frame`), so the
// shared input module's paths resolve the same here.
#[allow(dead_code)]
#[path = "../../agent/transport/authority.rs"]
mod normalizer;
#[allow(dead_code)]
#[path = "../../agent/transport/frame.rs"]
mod frame_headers;
mod transport {
    pub(crate) use super::frame_headers as frame;
    pub(crate) use super::normalizer as authority;
}
#[path = "../../agent/transport/authority/fuzz_input.rs"]
mod authority_fuzz;

fuzz_target!(|data: &[u8]| {
    authority_fuzz::check(data);
});
