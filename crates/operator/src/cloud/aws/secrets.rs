//! A last guard before a script leaves the operator: SSM command parameters are stored by AWS
//! and readable by anyone allowed to list commands, so they must never carry a secret. Hosts
//! read their secrets themselves (SSM Parameter Store, with their instance role).
//!
//! The guard looks for what a leaked secret looks like (AWS access key ids, secret key and
//! session token variables, PostgreSQL passwords, private keys), in the script and in any
//! base64 payload it carries (the bootstrap embeds the HostSpec that way).

/// Words that only appear next to a secret value.
const SECRET_WORDS: &[(&str, &str)] = &[
    ("aws_secret_access_key", "an AWS secret access key"),
    ("aws_session_token", "an AWS session token"),
    ("pgpassword", "a PostgreSQL password (PGPASSWORD)"),
    ("private key-----", "a private key"),
];

/// Shortest quoted text that is checked as a base64 payload.
const MIN_PAYLOAD: usize = 24;

/// What secret `text` seems to carry, or `None`.
pub fn find_secret(text: &str) -> Option<&'static str> {
    find_in_text(text).or_else(|| base64_payloads(text).find_map(|payload| find_in_text(&payload)))
}

fn find_in_text(text: &str) -> Option<&'static str> {
    let lower = text.to_ascii_lowercase();
    if let Some((_, what)) = SECRET_WORDS.iter().find(|(word, _)| lower.contains(word)) {
        return Some(what);
    }
    if has_access_key_id(text) {
        return Some("an AWS access key id");
    }
    if has_literal_password(&lower) {
        return Some("a password");
    }
    None
}

/// `AKIA…` or `ASIA…` followed by 16 upper-case letters or digits, as a whole word.
fn has_access_key_id(text: &str) -> bool {
    let bytes = text.as_bytes();
    let key_char = |byte: &u8| byte.is_ascii_uppercase() || byte.is_ascii_digit();
    (0..bytes.len().saturating_sub(19)).any(|start| {
        let candidate = &bytes[start..start + 20];
        let before_ok = start == 0 || !key_char(&bytes[start - 1]);
        let after_ok = bytes.get(start + 20).is_none_or(|byte| !key_char(byte));
        (candidate.starts_with(b"AKIA") || candidate.starts_with(b"ASIA"))
            && candidate[4..].iter().all(key_char)
            && before_ok
            && after_ok
    })
}

/// `password=value` or `password: value` with a literal value (a `$variable` is fine).
fn has_literal_password(lower: &str) -> bool {
    lower.match_indices("password").any(|(index, word)| {
        let rest = lower[index + word.len()..].trim_start_matches(['"', '\'']);
        let Some(value) = rest.strip_prefix('=').or_else(|| rest.strip_prefix(':')) else { return false };
        let value = value.trim_start_matches([' ', '"', '\'']);
        value.chars().next().is_some_and(|first| !first.is_whitespace() && first != '$')
    })
}

/// The decoded contents of single-quoted base64 strings in `text`.
fn base64_payloads(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split('\'').skip(1).step_by(2).filter(|quoted| quoted.len() >= MIN_PAYLOAD).filter_map(|quoted| {
        let base64 = quoted.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'+' | b'/' | b'='));
        let decoded = if base64 { aws_smithy_types::base64::decode(quoted).ok()? } else { return None };
        String::from_utf8(decoded).ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ordinary_bootstrap_is_clean() {
        let script = "#!/bin/sh\nset -eu\nAGENT_URL='https://example.com/pgec2-agent'\n\
                      curl -fsSL \"$AGENT_URL\" -o /opt/pgec2/pgec2-agent\n\
                      psql -c \"ALTER ROLE app PASSWORD $(cat /run/secret)\"\n";
        assert_eq!(find_secret(script), None);
    }

    #[test]
    fn access_keys_secret_variables_and_private_keys_are_found() {
        assert_eq!(find_secret("export AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE"), Some("an AWS access key id"));
        assert_eq!(find_secret("export AWS_SECRET_ACCESS_KEY=abc"), Some("an AWS secret access key"));
        assert_eq!(find_secret("PGPASSWORD=hunter2 psql"), Some("a PostgreSQL password (PGPASSWORD)"));
        assert_eq!(find_secret("-----BEGIN RSA PRIVATE KEY-----"), Some("a private key"));
        assert_eq!(find_secret("{\"password\": \"hunter2\"}"), Some("a password"));
        assert_eq!(find_secret("password=$DB_PASSWORD"), None);
        assert_eq!(find_secret("XAKIAIOSFODNN7EXAMPLEX"), None, "part of a longer word");
    }

    #[test]
    fn a_secret_hidden_in_a_base64_payload_is_found() {
        let payload = aws_smithy_types::base64::encode("{\"host\":\"shop/orders\",\"password\":\"hunter2\"}");
        assert_eq!(find_secret(&format!("SPEC_BASE64='{payload}'")), Some("a password"));
        let clean = aws_smithy_types::base64::encode("{\"host\":\"shop/orders\",\"port\":5432}");
        assert_eq!(find_secret(&format!("SPEC_BASE64='{clean}'")), None);
    }
}
