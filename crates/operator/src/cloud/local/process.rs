//! Processes the local cloud started and finds again after an operator restart: a pid with the
//! process's start time (`/proc/<pid>/stat`), so a later process that reuses the pid is not
//! taken for ours.

/// The start time of process `pid`, when it runs.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat).map(|(_, start)| start)
}

/// True when process `pid` runs (a zombie does not) and, when `start` is known, started then.
pub fn is_alive(pid: i32, start: Option<u64>) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some((state, started)) = parse_stat(&stat) else {
        return false;
    };
    state != 'Z' && state != 'X' && (start.is_none() || start == Some(started))
}

/// State and start time (field 22) of a `/proc/<pid>/stat` line.
fn parse_stat(stat: &str) -> Option<(char, u64)> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_stat_reads_state_and_start_time_even_with_spaces_in_the_name() {
        let line = "42 (sh (x) y) S 1 42 42 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_stat(line), Some(('S', 987654)));
    }

    #[test]
    fn this_process_is_alive_and_a_wrong_start_time_is_another_process() {
        let pid = i32::try_from(std::process::id()).expect("pid");
        let start = start_time(pid).expect("our own start time");
        assert!(is_alive(pid, Some(start)));
        assert!(is_alive(pid, None));
        assert!(!is_alive(pid, Some(start + 1)), "a reused pid is not ours");
    }
}
