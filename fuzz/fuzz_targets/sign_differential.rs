#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wxpay_guest::fuzzing::sign_differential(data));
