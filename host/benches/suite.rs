//! `cargo bench`: the whole suite (see `wxpay::bench::suite`), with the
//! results written to `BENCHMARKS.md` at the top of the workspace.
//! `cargo bench -- --quick` takes every measurement briefly.

use std::path::PathBuf;
use std::process::ExitCode;

use wxpay::bench::micro::Effort;
use wxpay::bench::suite::{self, EndToEnd, RedisChoice, SuiteOptions};

/// The same allocator as the `wxpay` binary, so both report the same figures.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn workspace_root() -> PathBuf {
    let host = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    host.parent().map_or_else(|| host.clone(), PathBuf::from)
}

fn main() -> ExitCode {
    let quick = std::env::args().any(|arg| arg == "--quick");
    let options = SuiteOptions {
        component: wxpay::sandbox::EMBEDDED_COMPONENT.to_vec(),
        wxpay: PathBuf::from(env!("CARGO_BIN_EXE_wxpay")),
        effort: if quick { Effort::QUICK } else { Effort::FULL },
        end_to_end: if quick {
            EndToEnd::quick()
        } else {
            EndToEnd::full()
        },
        micro_only: false,
        redis: std::env::var("WXPAY_BENCH_REDIS_URL")
            .map_or(RedisChoice::StartOwn, RedisChoice::Url),
        out: Some(workspace_root().join("BENCHMARKS.md")),
    };
    match suite::run(&options, &mut std::io::stdout()) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench suite: {e}");
            ExitCode::FAILURE
        }
    }
}
