//! What every benchmark that builds a large directory reports besides its
//! own figures: peak resident memory and disk use, read from the kernel, not
//! estimated.

#![allow(dead_code)]

use std::path::Path;

/// Peak resident set size of this process so far (`VmHWM`), in MiB.
pub fn peak_rss_mib() -> f64 {
    status_kib("VmHWM:") as f64 / 1024.0
}

/// Current resident set size (`VmRSS`), in MiB.
pub fn rss_mib() -> f64 {
    status_kib("VmRSS:") as f64 / 1024.0
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// Bytes the files under `dir` occupy on disk (allocated blocks, as `du`
/// counts them: a preallocated journal counts in full, a sparse file does
/// not).
pub fn disk_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            total += disk_bytes(&entry.path());
        } else {
            total += meta.blocks() * 512;
        }
    }
    total
}

/// Prints the peak resident memory line every large benchmark ends with.
pub fn report_peak_rss(what: &str) {
    println!("peak resident memory ({what}): {:.0} MiB", peak_rss_mib());
}
