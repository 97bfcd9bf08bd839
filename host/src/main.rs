//! The `wxpay` command.

fn main() -> std::process::ExitCode {
    wxpay::cli::run()
}
