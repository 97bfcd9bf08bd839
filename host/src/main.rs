//! The `wxpay` command.

/// mimalloc instead of the system allocator: under load the gateway
/// allocates from many threads, where glibc's arenas cost about a tenth of
/// its CPU (`BENCHMARKS.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    wxpay::cli::run()
}
