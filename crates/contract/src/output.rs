//! How the operator reads a `--json` answer of the agent. The contract: with `--json` (and for
//! `host apply`) the agent prints exactly one JSON document on stdout and nothing else; logs and
//! errors go to stderr. So the whole stdout is parsed as one document (whitespace around it is
//! allowed); anything before or after it, such as a log line a child process leaked onto stdout,
//! breaks the contract and is refused with [`OutputError`] rather than guessed around.

use serde::de::DeserializeOwned;

/// Characters of the unexpected stdout quoted in an error.
const QUOTED: usize = 120;

/// Lines of a failed command's output that an error message quotes.
pub const TAIL_LINES: usize = 20;
/// Bytes of a failed command's output that an error message quotes, at most.
pub const TAIL_BYTES: usize = 2000;

/// The end of a failed command's output (stderr, or stdout when stderr is empty) that an error
/// quotes, on the host (`host apply`) and in the operator (SSM, the local cloud): the last
/// [`TAIL_LINES`] lines, trailing whitespace trimmed, at most [`TAIL_BYTES`] bytes, cut at a
/// character boundary.
pub fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    let kept = lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n");
    if kept.len() <= TAIL_BYTES {
        return kept;
    }
    let mut start = kept.len() - TAIL_BYTES;
    while !kept.is_char_boundary(start) {
        start += 1;
    }
    kept[start..].to_string()
}

/// A command's stdout that is not the one JSON document the contract promises.
#[derive(Debug, thiserror::Error)]
#[error(
    "the agent's {command} printed {problem} on stdout instead of one JSON document ({source}); \
     stdout starts with {start:?}: check that the host runs a matching pgec2-agent and that nothing else \
     writes to its stdout"
)]
pub struct OutputError {
    pub command: &'static str,
    pub problem: &'static str,
    pub start: String,
    #[source]
    pub source: serde_json::Error,
}

/// Parses the whole `stdout` of `command` as one JSON document of type `T`.
pub fn parse_json<T: DeserializeOwned>(command: &'static str, stdout: &str) -> Result<T, OutputError> {
    serde_json::from_str(stdout).map_err(|source| {
        let problem = if stdout.trim().is_empty() {
            "nothing"
        } else if !stdout.trim_start().starts_with(['{', '[']) {
            "text"
        } else {
            "something else"
        };
        OutputError { command, problem, start: stdout.chars().take(QUOTED).collect(), source }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct Answer {
        name: String,
    }

    #[test]
    fn one_document_with_whitespace_around_it_is_read() {
        let answer: Answer = parse_json("backup-push", "\n{\n  \"name\": \"base_a\"\n}\n").expect("one document");
        assert_eq!(answer, Answer { name: "base_a".into() });
    }

    #[test]
    fn a_log_line_before_the_document_breaks_the_contract_and_is_refused() {
        let error = parse_json::<Answer>("backup-push", "starting\n{\"name\": \"base_a\"}\n").expect_err("noise");
        assert_eq!(error.problem, "text");
        assert!(error.to_string().contains("\"starting\\n"), "{error}");
        let error = parse_json::<Answer>("backup-push", "{\"name\": \"a\"}\n{\"name\": \"b\"}").expect_err("two");
        assert_eq!(error.problem, "something else");
        assert_eq!(parse_json::<Answer>("archive-status", "").expect_err("empty").problem, "nothing");
    }

    #[test]
    fn the_tail_keeps_the_last_lines_within_the_byte_limit() {
        let text: String = (0..100).map(|n| format!("line {n}\n")).collect();
        let kept = tail(&text);
        assert!(kept.starts_with("line 80") && kept.ends_with("line 99"), "{kept}");
        assert_eq!(tail("a\nb\nc\n"), "a\nb\nc");
        assert_eq!(tail(""), "");
        let long = "é".repeat(3000);
        let kept = tail(&long);
        assert!(kept.len() <= TAIL_BYTES && kept.len() > TAIL_BYTES - 2, "cut at a character boundary");
    }
}
