//! Fuzz target `sampling_options`: see `gpt2_fuzz::check_sampling` (fuzz/src/lib.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: gpt2_fuzz::CountingAlloc = gpt2_fuzz::CountingAlloc;

fuzz_target!(|data: &[u8]| gpt2_fuzz::check_sampling(data));
