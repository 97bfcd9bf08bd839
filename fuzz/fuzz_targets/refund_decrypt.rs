#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wxpay_guest::fuzzing::decrypt_refund(data));
