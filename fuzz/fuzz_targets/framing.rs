//! Fuzz target `framing`: the body is `aether_core::fuzzing::framing`, shared with the seed-replay tests.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    aether_core::fuzzing::framing(data);
});
