#!/usr/bin/env python3
"""Writes the libsodium fixtures of crates/core/src/walg/libsodium_tests.rs with libsodium itself
(Debian's libsodium23, through ctypes), framed as wal-g frames an encrypted object: a
crypto_secretstream_xchacha20poly1305 header, then 8192-byte messages tagged MESSAGE and a last,
shorter one tagged FINAL (empty when the plaintext fills its last message exactly).

Run from this directory: python3 make_libsodium_fixtures.py
"""
import ctypes
import ctypes.util

sodium = ctypes.CDLL(ctypes.util.find_library("sodium") or "libsodium.so.23")
assert sodium.sodium_init() >= 0

HEADER = sodium.crypto_secretstream_xchacha20poly1305_headerbytes()
ABYTES = sodium.crypto_secretstream_xchacha20poly1305_abytes()
STATE = sodium.crypto_secretstream_xchacha20poly1305_statebytes()
TAG_FINAL = sodium.crypto_secretstream_xchacha20poly1305_tag_final()
CHUNK = 8192
# wal-g's "none" key transform: the text's bytes, zero-padded to 32.
KEY_TEXT = b"pgec2-walg-libsodium-fixture"


def plaintext(length):
    return bytes((n * 7 + n // 251) % 256 for n in range(length))


def encrypt(data, key):
    state = ctypes.create_string_buffer(STATE)
    header = ctypes.create_string_buffer(HEADER)
    sodium.crypto_secretstream_xchacha20poly1305_init_push(state, header, key)
    out = bytearray(header.raw)
    chunks = [data[at:at + CHUNK] for at in range(0, len(data), CHUNK)]
    if not chunks or len(chunks[-1]) == CHUNK:
        chunks.append(b"")
    for index, chunk in enumerate(chunks):
        tag = TAG_FINAL if index == len(chunks) - 1 else 0
        cipher = ctypes.create_string_buffer(len(chunk) + ABYTES)
        length = ctypes.c_ulonglong()
        sodium.crypto_secretstream_xchacha20poly1305_push(
            state, cipher, ctypes.byref(length), chunk, ctypes.c_ulonglong(len(chunk)), None,
            ctypes.c_ulonglong(0), ctypes.c_ubyte(tag))
        out += cipher.raw[:length.value]
    return bytes(out)


key = KEY_TEXT.ljust(32, b"\0")
for name, length in (("libsodium_20000.bin", 20000), ("libsodium_16384.bin", 16384)):
    with open(name, "wb") as file:
        file.write(encrypt(plaintext(length), key))
