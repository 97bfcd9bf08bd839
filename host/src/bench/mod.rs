//! `wxpay bench`: measurements taken on this machine, against the
//! simulator, with nothing to configure.
//!
//! Machines here are small and noisy, so every report starts with a
//! description of the machine it ran on, and figures are read as that
//! machine's, never as absolute promises.

pub mod load;

/// The machine, in one line: CPU model, cores available, memory.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, name)| name.trim().to_owned())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_owned());
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            let kb: u64 = info
                .lines()
                .find(|l| l.starts_with("MemTotal:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some(format!(", {:.0} GiB", kb as f64 / 1_048_576.0))
        })
        .unwrap_or_default();
    format!("{cpu}, {cores} cores{memory}, {}", std::env::consts::OS)
}
