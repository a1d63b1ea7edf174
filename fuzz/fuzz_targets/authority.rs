//! Fuzzes the agent's `:authority` normalizer (agent/authority.rs) with a
//! client preface and frames whose header blocks are arbitrary. The input
//! format and the checks are in agent/authority_fuzz.rs, which `cargo test`
//! also runs on the seeds.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../agent/authority.rs"]
mod authority;
#[path = "../../agent/authority_fuzz.rs"]
mod authority_fuzz;

fuzz_target!(|data: &[u8]| {
    authority_fuzz::check(data);
});
