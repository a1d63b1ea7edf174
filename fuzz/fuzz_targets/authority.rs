//! Fuzzes the agent's `:authority` normalizer (agent/transport/authority.rs) with a
//! client preface and frames whose header blocks are arbitrary. The input
//! format and the checks are in agent/transport/authority/fuzz_input.rs, which `cargo test`
//! also runs on the seeds.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../agent/transport/authority.rs"]
mod authority;
#[path = "../../agent/transport/authority/fuzz_input.rs"]
mod authority_fuzz;

fuzz_target!(|data: &[u8]| {
    authority_fuzz::check(data);
});
