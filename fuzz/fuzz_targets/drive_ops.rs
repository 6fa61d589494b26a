//! Fuzz target `drive_ops`: the body is `aether_core::fuzzing::drive_ops`, shared with the tests.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    aether_core::fuzzing::drive_ops(data);
});
