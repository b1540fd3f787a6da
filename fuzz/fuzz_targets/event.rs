#![no_main]

// The check lives in tokenwatch-core so its regression tests replay saved inputs through it.
libfuzzer_sys::fuzz_target!(|data: &[u8]| tokenwatch_core::fuzzing::event(data));
