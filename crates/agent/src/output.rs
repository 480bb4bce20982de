//! What a command prints on stdout with `--json` (and `host apply` always): exactly one JSON
//! document and nothing else, as `pgec2_contract::output` promises the operator; logs and
//! errors go to stderr. Every such command renders its document here.

use std::io::Write;

/// The JSON document of `value`, pretty-printed, without the final newline.
pub fn json<T: serde::Serialize>(value: &T) -> Result<String, serde_json::Error> {
    serde_json::to_string_pretty(value)
}

/// Prints the JSON document of `value` on stdout, followed by a newline, and flushes it.
pub fn print_json<T: serde::Serialize>(value: &T) -> std::io::Result<()> {
    let document = json(value).map_err(std::io::Error::from)?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{document}")?;
    stdout.flush()
}
