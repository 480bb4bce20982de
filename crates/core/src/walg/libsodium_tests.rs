//! The fixtures under `testdata/` were written by libsodium itself (Debian's libsodium23 through
//! ctypes, `testdata/make_libsodium_fixtures.py`), framed as wal-g frames an object, so these
//! tests check the reader against libsodium's format independently of dryoc.

use std::io::Read;

use super::*;

const KEY_TEXT: &str = "pgec2-walg-libsodium-fixture";
const THREE_MESSAGES: &[u8] = include_bytes!("testdata/libsodium_20000.bin");
const EMPTY_FINAL_MESSAGE: &[u8] = include_bytes!("testdata/libsodium_16384.bin");

fn plaintext(length: usize) -> Vec<u8> {
    (0..length).map(|n| ((n * 7 + n / 251) % 256) as u8).collect()
}

fn key() -> LibsodiumKey {
    LibsodiumKey::from_text(KEY_TEXT, KeyTransform::None, "WALG_LIBSODIUM_KEY").expect("key")
}

fn decrypt(key: &LibsodiumKey, stored: &[u8]) -> Result<Vec<u8>, io::Error> {
    let mut plain = Vec::new();
    key.decrypt(stored).read_to_end(&mut plain).map(|_| plain)
}

fn error_text(result: Result<Vec<u8>, io::Error>) -> String {
    result.expect_err("the object must not decrypt").to_string()
}

#[test]
fn objects_libsodium_encrypted_as_wal_g_frames_them_decrypt_exactly() {
    assert_eq!(decrypt(&key(), THREE_MESSAGES).expect("decrypt"), plaintext(20_000));
    assert_eq!(decrypt(&key(), EMPTY_FINAL_MESSAGE).expect("decrypt"), plaintext(16_384));
}

#[test]
fn every_key_transform_gives_the_key_wal_g_derives() {
    let padded: Vec<u8> = KEY_TEXT.bytes().chain(std::iter::repeat_n(0, 32 - KEY_TEXT.len())).collect();
    let hex: String = padded.iter().map(|byte| format!("{byte:02x}")).collect();
    let base64 = base64::engine::general_purpose::STANDARD.encode(&padded);
    for (text, transform) in [(hex.as_str(), KeyTransform::Hex), (base64.as_str(), KeyTransform::Base64)] {
        let key = LibsodiumKey::from_text(text, transform, "WALG_LIBSODIUM_KEY").expect("key");
        assert_eq!(decrypt(&key, THREE_MESSAGES).expect("decrypt"), plaintext(20_000), "{transform}");
    }
    let long = format!("{KEY_TEXT}-and-more-than-32-bytes");
    let cut = LibsodiumKey::from_text(&long, KeyTransform::None, "k").expect("a long key is cut to 32 bytes");
    assert!(decrypt(&cut, THREE_MESSAGES).is_err(), "the cut key differs from the padded one");
}

#[test]
fn keys_wal_g_refuses_are_refused_naming_the_setting() {
    let short = LibsodiumKey::from_text("too-short", KeyTransform::None, "WALG_LIBSODIUM_KEY").expect_err("short");
    assert!(short.to_string().contains("WALG_LIBSODIUM_KEY"), "{short}");
    let odd = LibsodiumKey::from_text("abc", KeyTransform::Hex, "walg.libsodium_key").expect_err("odd hex");
    assert!(odd.to_string().contains("walg.libsodium_key") && odd.to_string().contains("hex"), "{odd}");
    let sixteen = LibsodiumKey::from_text(&"ab".repeat(16), KeyTransform::Hex, "k").expect_err("16 bytes");
    assert!(sixteen.to_string().contains("16 bytes"), "{sixteen}");
    assert_eq!("base64".parse::<KeyTransform>(), Ok(KeyTransform::Base64));
    assert!("rot13".parse::<KeyTransform>().is_err());
}

#[test]
fn a_key_file_is_read_trimmed_as_wal_g_reads_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("walg.key");
    std::fs::write(&path, format!("  {KEY_TEXT}\n")).expect("key file");
    let key = LibsodiumKey::from_file(&path, KeyTransform::None, "WALG_LIBSODIUM_KEY_PATH").expect("key");
    assert_eq!(decrypt(&key, THREE_MESSAGES).expect("decrypt"), plaintext(20_000));
    let missing = LibsodiumKey::from_file(&dir.path().join("nope"), KeyTransform::None, "WALG_LIBSODIUM_KEY_PATH");
    assert!(missing.expect_err("missing file").to_string().contains("WALG_LIBSODIUM_KEY_PATH"));
}

#[test]
fn a_wrong_key_fails_naming_the_setting_before_any_plaintext() {
    let wrong =
        LibsodiumKey::from_text("another-key-of-enough-length", KeyTransform::None, "WALG_LIBSODIUM_KEY").expect("key");
    let mut reader = wrong.decrypt(THREE_MESSAGES);
    let mut out = [0u8; 100];
    let error = reader.read(&mut out).expect_err("wrong key");
    assert!(error.to_string().contains("WALG_LIBSODIUM_KEY"), "{error}");
}

#[test]
fn a_flipped_byte_a_cut_object_and_trailing_bytes_each_fail() {
    for at in [3, HEADER_BYTES + 1, THREE_MESSAGES.len() - 2] {
        let mut flipped = THREE_MESSAGES.to_vec();
        flipped[at] ^= 0x20;
        assert!(error_text(decrypt(&key(), &flipped)).contains("cannot decrypt"), "flipped at {at}");
    }
    let at_message_end = HEADER_BYTES + CHUNK_SIZE + ABYTES;
    for cut in [10, at_message_end, at_message_end + 100, THREE_MESSAGES.len() - 1] {
        let text = error_text(decrypt(&key(), &THREE_MESSAGES[..cut]));
        assert!(text.contains("truncated") || text.contains("cannot decrypt"), "cut at {cut}: {text}");
    }
    for stored in [EMPTY_FINAL_MESSAGE, THREE_MESSAGES] {
        let mut longer = stored.to_vec();
        longer.extend_from_slice(b"more");
        let text = error_text(decrypt(&key(), &longer));
        assert!(text.contains("cannot decrypt") || text.contains("after libsodium's final message"), "{text}");
    }
}
