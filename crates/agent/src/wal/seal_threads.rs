//! How many threads seal one synchronously pushed file: two while a core is idle, one while the
//! cores are busy, decided on every push from how busy the host's cores are at that moment.
//!
//! ```text
//! file in pg_wal (the archiver)   /proc/loadavg runnable <= cores  and  cpu pressure avg10 < 50 %
//!                                   yes → min(2, cores, upload_concurrency)   no → 1
//! file elsewhere (by hand)        min(cores, upload_concurrency)
//! ```

use std::path::Path;

/// Most threads one archiver's push seals on while a core is idle: the seal of a 16 MiB
/// segment is 8 frames, and two threads cut it by a quarter on 2 vCPUs (18.6 to 13.7 ms,
/// docs/benchmarks.md round eight); more would take cores a busy primary may want a moment
/// later.
const IDLE_CORE_THREADS: usize = 2;

/// At or above this share of the last 10 seconds with some task waiting for a core (percent),
/// the cores count as busy even if the instant count shows an idle one. Measured on 2 vCPUs: a
/// lone archiver pushing one segment after another on an otherwise quiet host causes 13-34 %
/// itself (its own process starts and threads); a busy primary or other work beside it, 80-96 %.
const WAITING_PERCENT_LIMIT: f64 = 50.0;

/// How busy the host's cores are at the moment of a push. Read from the host's files (a
/// container sees the whole host's tasks: a busy host counts as busy, which costs one thread,
/// never correctness).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CoreLoad {
    /// Tasks running or waiting for a core right now, this push's own thread included (the
    /// fourth field of `/proc/loadavg`, the same count as `procs_running` of `/proc/stat`).
    pub runnable: Option<usize>,
    /// Percent of the last 10 seconds in which some task waited for a core (`some avg10` of
    /// `/proc/pressure/cpu`; absent on kernels without pressure stall information).
    pub waiting_percent: Option<f64>,
}

impl CoreLoad {
    /// The load now: two reads of small kernel files (about 30 µs each on a loaded 2-core host,
    /// where `/proc/stat` takes 86 µs), cheap enough for every push. A file that cannot be read
    /// leaves its field unknown.
    pub fn now() -> Self {
        Self::read(Path::new("/proc/loadavg"), Path::new("/proc/pressure/cpu"))
    }

    fn read(loadavg: &Path, pressure: &Path) -> Self {
        let read = |path: &Path| std::fs::read_to_string(path).ok();
        Self {
            runnable: read(loadavg).as_deref().and_then(parse_runnable),
            waiting_percent: read(pressure).as_deref().and_then(parse_waiting_percent),
        }
    }

    /// Whether the cores have room for a second seal thread: no more tasks runnable than cores
    /// (this push counted, so on two cores one other task, such as the journal committing the
    /// previous push, may be running), and no task has waited for a core much of the last 10
    /// seconds (an instant count alone can fall between the bursts of a busy primary's
    /// backends). Unknown counts as busy: one thread is the choice measured safe beside a busy
    /// primary.
    pub fn has_idle_core(&self, cores: usize) -> bool {
        let runnable_fits = self.runnable.is_some_and(|runnable| runnable <= cores);
        let quiet = self.waiting_percent.is_none_or(|percent| percent < WAITING_PERCENT_LIMIT);
        runnable_fits && quiet
    }
}

/// The runnable count of `/proc/loadavg` (`0.52 0.58 0.59 2/345 12345`: the `2`).
fn parse_runnable(loadavg: &str) -> Option<usize> {
    let field = loadavg.split_whitespace().nth(3)?;
    field.split_once('/')?.0.parse().ok()
}

/// `avg10` of the `some` line of `/proc/pressure/cpu`.
fn parse_waiting_percent(pressure: &str) -> Option<f64> {
    let some = pressure.lines().find(|line| line.starts_with("some "))?;
    some.split_whitespace().find_map(|field| field.strip_prefix("avg10="))?.parse().ok()
}

/// Threads that seal one synchronous push of a file, `in_pg_wal` when the file is in a data
/// directory's `pg_wal` (PostgreSQL's archiver calling), with the load it was decided from
/// (read only for such files, and only when more than one thread is allowed at all).
pub fn for_push(upload_concurrency: usize, in_pg_wal: bool) -> (usize, Option<CoreLoad>) {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    if in_pg_wal && cores.min(upload_concurrency) <= 1 {
        return (1, None);
    }
    let load = in_pg_wal.then(CoreLoad::now);
    (decide(cores, upload_concurrency, load.as_ref()), load)
}

/// The archiver's push (`load` given) seals on two threads while a core is idle and on one while
/// the cores are busy; any other file on one thread per core, at most `upload_concurrency`.
///
/// Measured (docs/benchmarks.md, "One seal thread against two" and round seven): beside a busy
/// primary every frame handed between seal threads waits for a time slice, and one thread
/// archived as much or more than two in 7 of 8 pairs under pgbench load, with 7–17 % less CPU
/// per segment; on idle cores two threads seal a 16 MiB segment in about half the time and cut
/// a push's latency by several milliseconds. Parallelism across files is `archive_async`'s.
fn decide(cores: usize, upload_concurrency: usize, load: Option<&CoreLoad>) -> usize {
    let most = cores.min(upload_concurrency).max(1);
    match load {
        None => most,
        Some(load) if load.has_idle_core(cores) => most.min(IDLE_CORE_THREADS),
        Some(_) => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::{CoreLoad, decide, parse_runnable, parse_waiting_percent};

    fn load(runnable: usize, waiting_percent: f64) -> CoreLoad {
        CoreLoad { runnable: Some(runnable), waiting_percent: Some(waiting_percent) }
    }

    #[test]
    fn the_archivers_push_seals_on_two_threads_while_a_core_is_idle() {
        assert_eq!(decide(2, 2, Some(&load(1, 0.0))), 2, "only this push runnable on 2 cores");
        assert_eq!(decide(2, 2, Some(&load(2, 0.0))), 2, "one short task beside it");
        assert_eq!(decide(2, 2, Some(&load(1, 34.0))), 2, "a lone archiver's own pushes");
        assert_eq!(decide(4, 4, Some(&load(3, 2.5))), 2, "never more than two");
        assert_eq!(decide(16, 8, Some(&load(1, 0.0))), 2);
    }

    #[test]
    fn the_archivers_push_seals_on_one_thread_while_the_cores_are_busy() {
        assert_eq!(decide(2, 2, Some(&load(3, 0.0))), 1, "two other tasks want the cores");
        assert_eq!(decide(2, 2, Some(&load(5, 60.0))), 1);
        assert_eq!(decide(2, 2, Some(&load(1, 85.0))), 1, "an instant between the bursts of a busy host");
        assert_eq!(decide(2, 2, Some(&load(1, 50.0))), 1);
        assert_eq!(decide(4, 4, Some(&load(5, 0.0))), 1);
    }

    #[test]
    fn the_archivers_push_never_exceeds_the_cores_or_upload_concurrency() {
        assert_eq!(decide(1, 4, Some(&load(0, 0.0))), 1, "one core");
        assert_eq!(decide(4, 1, Some(&load(1, 0.0))), 1, "upload_concurrency = 1");
        assert_eq!(decide(4, 0, Some(&load(1, 0.0))), 1);
    }

    #[test]
    fn an_unknown_load_counts_as_busy_and_missing_pressure_information_as_quiet() {
        assert_eq!(decide(2, 2, Some(&CoreLoad::default())), 1, "nothing readable");
        assert_eq!(decide(2, 2, Some(&CoreLoad { runnable: None, waiting_percent: Some(0.0) })), 1);
        assert_eq!(decide(2, 2, Some(&CoreLoad { runnable: Some(1), waiting_percent: None })), 2);
    }

    #[test]
    fn a_file_elsewhere_seals_on_one_thread_per_core_at_most_upload_concurrency() {
        assert_eq!(decide(2, 4, None), 2);
        assert_eq!(decide(16, 4, None), 4);
        assert_eq!(decide(4, 0, None), 1);
        assert_eq!(decide(1, 4, None), 1);
    }

    #[test]
    fn the_kernels_files_are_parsed_and_garbage_is_unknown() {
        assert_eq!(parse_runnable("0.52 0.58 0.59 2/345 12345\n"), Some(2));
        assert_eq!(parse_runnable("0.52 0.58"), None);
        assert_eq!(parse_runnable("0.52 0.58 0.59 x/345 1"), None);
        let pressure = "some avg10=62.72 avg60=35.35 avg300=20.38 total=36942957488\n\
                        full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
        assert_eq!(parse_waiting_percent(pressure), Some(62.72));
        assert_eq!(parse_waiting_percent("full avg10=1.00\n"), None);
    }

    #[test]
    fn the_load_is_read_from_the_kernels_files_and_an_unreadable_file_is_unknown() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (loadavg, pressure) = (dir.path().join("loadavg"), dir.path().join("cpu"));
        std::fs::write(&loadavg, "1.00 1.00 1.00 3/100 42\n").expect("write");
        std::fs::write(&pressure, "some avg10=4.50 avg60=1.00 avg300=0.50 total=1\n").expect("write");
        assert_eq!(CoreLoad::read(&loadavg, &pressure), load(3, 4.5));
        let missing = dir.path().join("missing");
        assert_eq!(CoreLoad::read(&missing, &missing), CoreLoad::default());
    }
}
