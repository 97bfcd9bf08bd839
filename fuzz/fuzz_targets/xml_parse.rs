#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wxpay_guest::fuzzing::parse_xml(data));
