#![no_main]

libfuzzer_sys::fuzz_target!(init: wxpay::fuzzing::init_component(), |data: &[u8]| wxpay::fuzzing::component_differential(data));
