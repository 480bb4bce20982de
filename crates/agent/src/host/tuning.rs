//! Automatic tuning from memory and CPUs, after PGTune's "web application" profile on SSD
//! storage (EBS gp3): the classic formulas, with PGTune's caps.
//!
//! - `max_connections` 200; `shared_buffers` RAM/4; `effective_cache_size` RAM·3/4;
//!   `maintenance_work_mem` RAM/16 capped at 2 GB;
//! - `wal_buffers` 3 % of shared_buffers, capped at (and rounded up near) 16 MB, at least 32 kB;
//! - `work_mem` = (RAM − shared_buffers) / (max_connections·3) / max_parallel_workers_per_gather,
//!   at least 64 kB;
//! - with 4 CPUs or more: `max_worker_processes` and `max_parallel_workers` = CPUs,
//!   `max_parallel_workers_per_gather` and `max_parallel_maintenance_workers` = CPUs/2 capped
//!   at 4 (more workers per query bring little); below 4 CPUs PostgreSQL's defaults stay;
//! - constants: checkpoint_completion_target 0.9, default_statistics_target 100,
//!   random_page_cost 1.1, effective_io_concurrency 200, min_wal_size 1GB, max_wal_size 4GB,
//!   max_slot_wal_keep_size 8GB (a replication slot whose reader stopped, such as
//!   `wal-receive`'s, is given up before it fills the disk; the receiver reports it).
//!
//! `work_mem` is derived from the effective `max_connections`, `shared_buffers` and
//! `max_parallel_workers_per_gather`: when the spec overrides one of them, the derivation
//! follows the override.

use std::collections::BTreeMap;

use pgec2_core::host_spec::Resources;

const KB_PER_MB: u64 = 1024;
const KB_PER_GB: u64 = 1024 * 1024;
const MAX_CONNECTIONS: u64 = 200;
const MAINTENANCE_WORK_MEM_CAP_KB: u64 = 2 * KB_PER_GB;
const WAL_BUFFERS_CAP_KB: u64 = 16 * KB_PER_MB;
const WAL_BUFFERS_NEAR_CAP_KB: u64 = 14 * KB_PER_MB;
const PARALLEL_CAP: u32 = 4;
/// PostgreSQL's own default, used when tuning leaves parallelism alone.
const DEFAULT_WORKERS_PER_GATHER: u64 = 2;

/// The tuned parameters in the order they are written, values as PostgreSQL reads them.
pub fn tune(resources: Resources, overrides: &BTreeMap<String, String>) -> Vec<(&'static str, String)> {
    let memory_kb = resources.memory_bytes / 1024;
    let cpus = resources.cpus.max(1);
    let shared_buffers_kb = memory_kb / 4;
    let mut tuned = vec![
        ("max_connections", MAX_CONNECTIONS.to_string()),
        ("shared_buffers", format_kb(shared_buffers_kb)),
        ("effective_cache_size", format_kb(memory_kb * 3 / 4)),
        ("maintenance_work_mem", format_kb((memory_kb / 16).min(MAINTENANCE_WORK_MEM_CAP_KB))),
        ("checkpoint_completion_target", "0.9".to_string()),
        ("wal_buffers", format_kb(wal_buffers_kb(shared_buffers_kb))),
        ("default_statistics_target", "100".to_string()),
        ("random_page_cost", "1.1".to_string()),
        ("effective_io_concurrency", "200".to_string()),
    ];
    let parallel = parallel_settings(cpus);
    let workers_per_gather = parallel
        .iter()
        .find(|(name, _)| *name == "max_parallel_workers_per_gather")
        .map_or(DEFAULT_WORKERS_PER_GATHER, |(_, value)| u64::from(*value));
    let effective = Effective {
        memory_kb,
        shared_buffers_kb: overridden(overrides, "shared_buffers", parse_memory_kb).unwrap_or(shared_buffers_kb),
        max_connections: overridden(overrides, "max_connections", |text| text.parse().ok()).unwrap_or(MAX_CONNECTIONS),
        workers_per_gather: overridden(overrides, "max_parallel_workers_per_gather", |text| text.parse().ok())
            .unwrap_or(workers_per_gather),
    };
    tuned.push(("work_mem", format_kb(effective.work_mem_kb())));
    tuned.push(("min_wal_size", "1GB".to_string()));
    tuned.push(("max_wal_size", "4GB".to_string()));
    tuned.push(("max_slot_wal_keep_size", "8GB".to_string()));
    tuned.extend(parallel.into_iter().map(|(name, value)| (name, value.to_string())));
    tuned
}

/// The values work_mem is derived from, after the spec's overrides.
struct Effective {
    memory_kb: u64,
    shared_buffers_kb: u64,
    max_connections: u64,
    workers_per_gather: u64,
}

impl Effective {
    fn work_mem_kb(&self) -> u64 {
        let spare = self.memory_kb.saturating_sub(self.shared_buffers_kb);
        let per_connection = spare / (self.max_connections.max(1) * 3) / self.workers_per_gather.max(1);
        per_connection.max(64)
    }
}

fn wal_buffers_kb(shared_buffers_kb: u64) -> u64 {
    let wal_buffers = (shared_buffers_kb * 3 / 100).min(WAL_BUFFERS_CAP_KB);
    if wal_buffers > WAL_BUFFERS_NEAR_CAP_KB { WAL_BUFFERS_CAP_KB } else { wal_buffers.max(32) }
}

fn parallel_settings(cpus: u32) -> Vec<(&'static str, u32)> {
    if cpus < 4 {
        return Vec::new();
    }
    let half = cpus.div_ceil(2).min(PARALLEL_CAP);
    vec![
        ("max_worker_processes", cpus),
        ("max_parallel_workers_per_gather", half),
        ("max_parallel_workers", cpus),
        ("max_parallel_maintenance_workers", half),
    ]
}

fn overridden<T>(overrides: &BTreeMap<String, String>, name: &str, parse: impl Fn(&str) -> Option<T>) -> Option<T> {
    overrides.get(name).and_then(|text| parse(text.trim()))
}

/// A memory size as PostgreSQL writes it: the largest unit that divides it exactly.
pub fn format_kb(kb: u64) -> String {
    if kb > 0 && kb.is_multiple_of(KB_PER_GB) {
        format!("{}GB", kb / KB_PER_GB)
    } else if kb > 0 && kb.is_multiple_of(KB_PER_MB) {
        format!("{}MB", kb / KB_PER_MB)
    } else {
        format!("{kb}kB")
    }
}

/// Parses a PostgreSQL memory value (`8GB`, `512MB`, `64kB`, or a bare number of 8 kB pages).
pub fn parse_memory_kb(text: &str) -> Option<u64> {
    let digits_end = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    let number: u64 = number.parse().ok()?;
    let factor = match unit.trim() {
        "" => 8,
        "kB" => 1,
        "MB" => KB_PER_MB,
        "GB" => KB_PER_GB,
        "TB" => KB_PER_GB * 1024,
        _ => return None,
    };
    number.checked_mul(factor)
}

/// Memory and CPUs of this machine: `MemTotal` from /proc/meminfo and the CPUs we may use.
pub fn detect_resources() -> Option<Resources> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let memory_bytes = parse_meminfo_total(&meminfo)?;
    let cpus = std::thread::available_parallelism().map_or(1, |count| count.get());
    Some(Resources { memory_bytes, cpus: u32::try_from(cpus).unwrap_or(u32::MAX) })
}

fn parse_meminfo_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|line| line.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1024 * 1024 * 1024;

    fn tuned(memory_gib: u64, cpus: u32) -> BTreeMap<&'static str, String> {
        tune(Resources { memory_bytes: memory_gib * GIB, cpus }, &BTreeMap::new()).into_iter().collect()
    }

    #[test]
    fn a_t3_micro_gets_small_buffers_and_keeps_default_parallelism() {
        let t3_micro = tuned(1, 2);
        assert_eq!(t3_micro["max_connections"], "200");
        assert_eq!(t3_micro["shared_buffers"], "256MB");
        assert_eq!(t3_micro["effective_cache_size"], "768MB");
        assert_eq!(t3_micro["maintenance_work_mem"], "64MB");
        assert_eq!(t3_micro["wal_buffers"], "7864kB", "3% of shared_buffers below the 16MB cap");
        assert_eq!(t3_micro["work_mem"], "655kB", "(1GiB - 256MiB) / 600 / 2 default workers per gather");
        assert!(!t3_micro.contains_key("max_worker_processes"), "below 4 CPUs PostgreSQL's defaults stay");
    }

    #[test]
    fn an_r6g_xlarge_gets_a_quarter_of_its_memory_and_half_its_cpus_per_gather() {
        let r6g_xlarge = tuned(32, 4);
        assert_eq!(r6g_xlarge["shared_buffers"], "8GB");
        assert_eq!(r6g_xlarge["effective_cache_size"], "24GB");
        assert_eq!(r6g_xlarge["maintenance_work_mem"], "2GB");
        assert_eq!(r6g_xlarge["wal_buffers"], "16MB");
        assert_eq!(r6g_xlarge["work_mem"], "20971kB");
        assert_eq!(r6g_xlarge["max_worker_processes"], "4");
        assert_eq!(r6g_xlarge["max_parallel_workers_per_gather"], "2");
        assert_eq!(r6g_xlarge["max_parallel_workers"], "4");
        assert_eq!(r6g_xlarge["max_parallel_maintenance_workers"], "2");
    }

    #[test]
    fn an_m6i_4xlarge_caps_maintenance_memory_and_workers_per_gather() {
        let m6i_4xlarge = tuned(64, 16);
        assert_eq!(m6i_4xlarge["shared_buffers"], "16GB");
        assert_eq!(m6i_4xlarge["effective_cache_size"], "48GB");
        assert_eq!(m6i_4xlarge["maintenance_work_mem"], "2GB", "capped at 2GB");
        assert_eq!(m6i_4xlarge["work_mem"], "20971kB", "(64GiB - 16GiB) / 600 / 4");
        assert_eq!(m6i_4xlarge["max_worker_processes"], "16");
        assert_eq!(m6i_4xlarge["max_parallel_workers"], "16");
        assert_eq!(m6i_4xlarge["max_parallel_workers_per_gather"], "4", "capped at 4");
        assert_eq!(m6i_4xlarge["max_parallel_maintenance_workers"], "4");
    }

    #[test]
    fn every_profile_sets_the_ssd_and_checkpoint_constants() {
        for settings in [tuned(1, 2), tuned(32, 4), tuned(64, 16)] {
            assert_eq!(settings["checkpoint_completion_target"], "0.9");
            assert_eq!(settings["default_statistics_target"], "100");
            assert_eq!(settings["random_page_cost"], "1.1");
            assert_eq!(settings["effective_io_concurrency"], "200");
            assert_eq!(settings["min_wal_size"], "1GB");
            assert_eq!(settings["max_wal_size"], "4GB");
        }
    }

    #[test]
    fn work_mem_follows_overridden_connections_and_buffers() {
        let overrides = BTreeMap::from([
            ("max_connections".to_string(), "50".to_string()),
            ("shared_buffers".to_string(), "16GB".to_string()),
        ]);
        let settings: BTreeMap<_, _> =
            tune(Resources { memory_bytes: 32 * GIB, cpus: 4 }, &overrides).into_iter().collect();
        assert_eq!(settings["work_mem"], "55924kB", "(32GiB - 16GiB) / 150 / 2");
    }

    #[test]
    fn memory_values_parse_like_postgresql_reads_them() {
        assert_eq!(parse_memory_kb("8GB"), Some(8 * KB_PER_GB));
        assert_eq!(parse_memory_kb("512MB"), Some(512 * KB_PER_MB));
        assert_eq!(parse_memory_kb("64kB"), Some(64));
        assert_eq!(parse_memory_kb("16384"), Some(16384 * 8), "a bare number counts 8kB pages");
        assert_eq!(parse_memory_kb("lots"), None);
        assert_eq!(format_kb(3 * KB_PER_GB), "3GB");
        assert_eq!(format_kb(1536 * KB_PER_MB), "1536MB");
        assert_eq!(format_kb(1310), "1310kB");
    }

    #[test]
    fn meminfo_total_is_read_in_bytes() {
        let meminfo = "MemTotal:        1006952 kB\nMemFree:          123456 kB\n";
        assert_eq!(parse_meminfo_total(meminfo), Some(1006952 * 1024));
        assert_eq!(parse_meminfo_total("garbage"), None);
    }
}
