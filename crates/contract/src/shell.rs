//! Quoting for POSIX `sh`, the one place pgec2 renders words into a shell script that runs on a
//! host (the bootstrap's values, the agent commands the operator sends).

/// `text` as one shell word, in single quotes, where nothing is special but the quote itself
/// (written `'\''`). Always quoted, so a value is easy to find in a script (the operator's
/// secret scanner reads quoted base64 payloads). `None` when it contains a NUL byte, which no
/// shell word can carry.
pub fn quote(text: &str) -> Option<String> {
    if text.contains('\0') {
        return None;
    }
    Some(format!("'{}'", text.replace('\'', r"'\''")))
}

/// `text` as one shell word, left bare when it holds only characters no shell treats specially
/// (letters, digits and `/._-:=,+@`) and quoted with [`quote`] otherwise: for commands a person
/// reads, such as the `restore_command` written into `postgresql.auto.conf`. `None` when it
/// contains a NUL byte.
pub fn word(text: &str) -> Option<String> {
    let bare = !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-:=,+@".contains(&b));
    if bare { Some(text.to_string()) } else { quote(text) }
}

/// The words quoted and joined by spaces; `None` when one contains a NUL byte.
pub fn words<S: AsRef<str>>(words: &[S]) -> Option<String> {
    Some(words.iter().map(|word| quote(word.as_ref())).collect::<Option<Vec<_>>>()?.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_survive_and_nul_is_refused() {
        assert_eq!(quote("it's").as_deref(), Some(r"'it'\''s'"));
        assert_eq!(words(&["a b", "$x", ""]).as_deref(), Some("'a b' '$x' ''"));
        assert_eq!(quote("nul\0"), None);
        assert_eq!(word("/usr/bin/pgec2-agent").as_deref(), Some("/usr/bin/pgec2-agent"));
        assert_eq!(word("/opt/my agent").as_deref(), Some("'/opt/my agent'"));
        assert_eq!(word("").as_deref(), Some("''"));
        assert_eq!(word("nul\0"), None);
    }
}
