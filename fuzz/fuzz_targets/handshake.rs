//! Fuzz target `handshake`: the body is `aether_core::fuzzing::handshake`, shared with the seed-replay tests.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aether_core::fuzzing::handshake(data));
