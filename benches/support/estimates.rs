//! Reading a run's figures back from criterion, for the ratios each bench
//! prints at the end, and naming the machine they were measured on.

use std::sync::OnceLock;
use std::time::SystemTime;

/// When this run began: estimates written before are an earlier run's.
static START: OnceLock<SystemTime> = OnceLock::new();

/// Marks the start of this run; call it first in `main`.
pub fn begin() {
    let _ = START.set(SystemTime::now());
}

/// Criterion's figure, in nanoseconds, for `group/function` (as criterion
/// names its directories: a `/` in a group name becomes `_`, and any `/`
/// after the first here is one inside the function id), if this run
/// measured it: the slope when criterion fitted one, else the mean.
pub fn estimate_ns(id: &str) -> Option<f64> {
    let (group, function) = id.split_once('/')?;
    let path = std::path::Path::new(
        &std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into()),
    )
    .join("criterion")
    .join(group)
    .join(function.replace('/', "_"))
    .join("new/estimates.json");
    // Only estimates written by this process: a filtered run must not mix
    // in figures from an earlier one.
    let written = std::fs::metadata(&path).and_then(|m| m.modified()).ok()?;
    if written < *START.get()? {
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["slope"]["point_estimate"]
        .as_f64()
        .or_else(|| v["mean"]["point_estimate"].as_f64())
}

/// The CPU, as /proc/cpuinfo names it (family and model too: a virtual
/// machine's name is often generic).
pub fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        info.lines()
            .find(|l| l.split(':').next().map(str::trim) == Some(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "?".into())
    };
    format!(
        "{}, family {} model {}",
        field("model name"),
        field("cpu family"),
        field("model")
    )
}
