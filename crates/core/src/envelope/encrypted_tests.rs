use std::sync::Arc;

use super::*;
use crate::encryption::{KeyProvider, StaticKey};

fn key(byte: u8) -> Arc<dyn KeyProvider> {
    Arc::new(StaticKey::from_bytes([byte; 32], format!("test key {byte}")))
}

fn writing(byte: u8) -> Keyring {
    Keyring::new(Some(key(byte)), Vec::new())
}

fn compressions() -> [Compression; 3] {
    [
        Compression { algorithm: Algorithm::None, level: 0 },
        Compression { algorithm: Algorithm::Zstd, level: 3 },
        Compression { algorithm: Algorithm::Lz4, level: 0 },
    ]
}

fn contents() -> Vec<Vec<u8>> {
    let mixed: Vec<u8> = (0..300_000u32).flat_map(|n| (n.wrapping_mul(2_654_435_761) >> 13).to_le_bytes()).collect();
    vec![Vec::new(), b"x".to_vec(), vec![9u8; CHUNK_LEN], vec![3u8; 2 * CHUNK_LEN + 1], mixed]
}

#[test]
fn encrypted_content_opens_to_the_same_bytes_for_every_algorithm_and_size() {
    let keyring = writing(1);
    for compression in compressions() {
        for content in contents() {
            let (stored, header) = seal_with(&content, compression, &keyring).expect("seal");
            assert!(header.encrypted && read_header(&stored).expect("header").encrypted);
            let (opened, opened_header) = open_with(&stored, &keyring).expect("open");
            assert_eq!(opened, content, "{compression:?}, {} bytes", content.len());
            assert_eq!(opened_header, header, "the opened header carries the content's hash");
            let (streamed, streamed_header) =
                seal_reader_with(&mut &content[..], content.len(), compression, &keyring).expect("seal reader");
            assert_eq!(streamed_header, header);
            assert_eq!(open_with(&streamed, &keyring).expect("open streamed").0, content);
        }
    }
}

#[test]
fn stored_bytes_of_an_encrypted_object_hold_no_plaintext() {
    let content = b"SECRET-ROW-7f3a: the customer's card number ".repeat(2000);
    let none = Compression { algorithm: Algorithm::None, level: 0 };
    let (plain, _) = seal(&content, none).expect("seal plain");
    let (stored, _) = seal_with(&content, none, &writing(1)).expect("seal encrypted");
    let needle = b"SECRET-ROW-7f3a";
    assert!(plain.windows(needle.len()).any(|window| window == needle), "the plain object holds it");
    assert!(!stored.windows(needle.len()).any(|window| window == needle), "the encrypted one must not");
    assert_eq!(stored[8], 2, "encrypted objects are format version 2");
    assert_eq!(plain[8], 1, "plain objects stay format version 1");
}

#[test]
fn an_encrypted_object_without_its_key_fails_naming_the_key() {
    let (stored, _) = seal_with(b"content", Compression::default(), &writing(1)).expect("seal");
    let key_id = key(1).key_id().to_string();
    let missing = open(&stored).expect_err("no key");
    assert!(missing.is_key_error() && missing.to_string().contains(&key_id), "{missing}");
    let other = open_with(&stored, &writing(2)).expect_err("other key");
    assert!(other.is_key_error() && other.to_string().contains(&key_id), "{other}");
    assert!(open_reader_with(&stored, &writing(2)).is_err(), "a reader fails before any content");
}

#[test]
fn a_wrong_key_under_the_right_id_does_not_decrypt() {
    #[derive(Debug)]
    struct Impostor(StaticKey, String);
    impl KeyProvider for Impostor {
        fn key_id(&self) -> &str {
            &self.1
        }
        fn describe(&self) -> String {
            "impostor".to_string()
        }
        fn wrap(&self, data_key: &crate::encryption::DataKey) -> Result<Vec<u8>, KeyError> {
            self.0.wrap(data_key)
        }
        fn unwrap(&self, key_id: &str, wrapped: &[u8]) -> Result<crate::encryption::DataKey, KeyError> {
            self.0.unwrap(self.0.key_id(), wrapped).map_err(|_| KeyError::WrongKey { key: key_id.to_string() })
        }
    }
    let (stored, _) = seal_with(b"content", Compression::default(), &writing(1)).expect("seal");
    let impostor = Impostor(StaticKey::from_bytes([2; 32], "two".into()), key(1).key_id().to_string());
    let keyring = Keyring::new(Some(Arc::new(impostor)), Vec::new());
    let error = open_with(&stored, &keyring).expect_err("wrong key");
    assert!(error.to_string().contains("does not decrypt"), "{error}");
}

#[test]
fn any_flipped_or_cut_byte_of_an_encrypted_object_is_detected() {
    let keyring = writing(1);
    let content: Vec<u8> = (0..200_000u32).map(|n| (n % 251) as u8).collect();
    for compression in compressions() {
        let (stored, _) = seal_with(&content, compression, &keyring).expect("seal");
        let step = (stored.len() / 97).max(1);
        for position in (0..stored.len()).step_by(step).chain([stored.len() - 1]) {
            let mut corrupt = stored.clone();
            corrupt[position] ^= 0x01;
            assert!(open_with(&corrupt, &keyring).is_err(), "{compression:?}: flip at {position} went unnoticed");
        }
        for cut in [HEADER_LEN, HEADER_LEN + 40, stored.len() - 17, stored.len() - 1] {
            assert!(open_with(&stored[..cut], &keyring).is_err(), "{compression:?}: cut at {cut} went unnoticed");
        }
    }
}

#[test]
fn a_tampered_object_with_a_recomputed_stored_hash_still_fails_to_authenticate() {
    let keyring = writing(1);
    let (mut stored, _) = seal_with(&vec![5u8; 100_000], Compression::default(), &keyring).expect("seal");
    let last = stored.len() - 20;
    stored[last] ^= 0x80;
    let rehashed = blake3::hash(&stored[HEADER_LEN..]);
    stored[20..HEADER_LEN].copy_from_slice(rehashed.as_bytes());
    let error = open_with(&stored, &keyring).expect_err("tampered");
    assert!(error.to_string().contains("does not authenticate"), "{error}");
}

#[test]
fn a_rotated_keyring_reads_objects_of_the_old_key_and_writes_with_the_new() {
    let (old_object, _) = seal_with(b"written before the rotation", Compression::default(), &writing(1)).expect("seal");
    let rotated = Keyring::new(Some(key(2)), vec![key(1)]);
    assert_eq!(open_with(&old_object, &rotated).expect("old object").0, b"written before the rotation");
    let (new_object, _) = seal_with(b"after", Compression::default(), &rotated).expect("seal");
    assert!(open_with(&new_object, &writing(1)).is_err(), "new objects use the new key");
    assert_eq!(open_with(&new_object, &writing(2)).expect("new object").0, b"after");
}

#[test]
fn plain_objects_open_with_any_keyring() {
    let (stored, header) = seal(b"plain", Compression::default()).expect("seal");
    assert_eq!(open_with(&stored, &writing(1)).expect("open"), (b"plain".to_vec(), header));
}

#[test]
fn a_reused_encrypting_sealer_gives_every_object_its_own_data_key() {
    let mut sealer = Sealer::with_keyring(Compression::default(), writing(1)).expect("sealer");
    let (mut first, mut second) = (Vec::new(), Vec::new());
    sealer.seal_into(b"same content", &mut first).expect("seal");
    sealer.seal_into(b"same content", &mut second).expect("seal");
    assert_ne!(first, second, "a fresh data key and nonce per object");
    assert_eq!(open_with(&second, &writing(1)).expect("open").0, b"same content");
}
