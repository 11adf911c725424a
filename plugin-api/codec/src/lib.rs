//! The stored-payload codec of the durable sink plugins: every blob is one
//! version byte, then the body. Version 0 is plaintext; 1 is AES-256-GCM with
//! one key; 2 is AES-256-GCM with keys by id from a [`KeyProvider`], the id
//! stored in the blob so rotated keys still decrypt old rows. The AES codecs
//! bind the row's indexed columns as associated data, so a blob moved to
//! another row, or a row whose columns were edited, fails to decrypt.
//!
//! A support library for sink plugins, not a plugin itself.

use std::collections::HashMap;
use std::sync::Arc;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use serde_json::Value;

const NONCE_LEN: usize = 12;
/// AES-256 key length in bytes.
pub const KEY_LEN: usize = 32;

/// Why a payload could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// A stored blob with no bytes at all.
    #[error("empty payload blob")]
    Empty,
    /// A blob written by a codec that is not configured here.
    #[error("no codec configured for payload version {0}; was this row written with an encryption codec that is not configured (set \"codec\" in the sink config)?")]
    UnknownVersion(u8),
    /// Authentication failed.
    #[error("cannot decrypt payload: wrong key, or the row was altered or moved to another row")]
    Decrypt,
    /// A blob too short to hold its header.
    #[error("truncated encrypted payload")]
    Truncated,
    /// A key could not be found or is malformed.
    #[error("{0}")]
    Key(String),
    /// The codec config is not understood.
    #[error("invalid codec config: {0} (expected null, \"plaintext\", {{\"kind\": \"aes-gcm\", \"key_env\": VAR}} or {{\"kind\": \"managed-aes-gcm\"}})")]
    Config(String),
    /// Decrypted bytes that are not UTF-8 JSON text.
    #[error("decoded payload is not UTF-8")]
    Utf8,
}

/// One way of encoding stored payloads.
pub trait PayloadCodec: Send + Sync {
    /// The tag byte this codec writes first.
    fn version(&self) -> u8;
    /// Encodes `plaintext`, binding `aad`.
    fn encode_body(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, CodecError>;
    /// Decodes a body this codec wrote, checking `aad`.
    fn decode_body(&self, body: &[u8], aad: &[u8]) -> Result<Vec<u8>, CodecError>;
}

/// Plaintext (version 0). No integrity: `aad` cannot be bound.
pub struct IdentityCodec;

impl PayloadCodec for IdentityCodec {
    fn version(&self) -> u8 {
        0
    }
    fn encode_body(&self, plaintext: &[u8], _aad: &[u8]) -> Result<Vec<u8>, CodecError> {
        Ok(plaintext.to_vec())
    }
    fn decode_body(&self, body: &[u8], _aad: &[u8]) -> Result<Vec<u8>, CodecError> {
        Ok(body.to_vec())
    }
}

fn seal(key: &[u8; KEY_LEN], plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, CodecError> {
    let cipher = Aes256Gcm::new(key.into());
    let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
    let ct = cipher
        .encrypt(&nonce, Payload { msg: plaintext, aad })
        .map_err(|_| CodecError::Decrypt)?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&ct);
    Ok(out)
}

fn open(key: &[u8; KEY_LEN], body: &[u8], aad: &[u8]) -> Result<Vec<u8>, CodecError> {
    if body.len() < NONCE_LEN {
        return Err(CodecError::Truncated);
    }
    let (nonce, ct) = body.split_at(NONCE_LEN);
    Aes256Gcm::new(key.into())
        .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
        .map_err(|_| CodecError::Decrypt)
}

/// AES-256-GCM with one key (version 1): `[nonce][ciphertext+tag]`.
pub struct AesGcmCodec {
    key: [u8; KEY_LEN],
}

impl AesGcmCodec {
    /// A codec with this key.
    pub fn new(key: [u8; KEY_LEN]) -> Self {
        AesGcmCodec { key }
    }

    /// A codec whose key (hex or base64) is in the environment variable `var`.
    pub fn from_env(var: &str) -> Result<Self, CodecError> {
        let raw = std::env::var(var).map_err(|_| {
            CodecError::Key(format!(
                "{var} is not set; provide a 32-byte key (hex or base64) to enable encryption at rest"
            ))
        })?;
        Ok(AesGcmCodec::new(decode_key(&raw, var)?))
    }
}

impl PayloadCodec for AesGcmCodec {
    fn version(&self) -> u8 {
        1
    }
    fn encode_body(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, CodecError> {
        seal(&self.key, plaintext, aad)
    }
    fn decode_body(&self, body: &[u8], aad: &[u8]) -> Result<Vec<u8>, CodecError> {
        open(&self.key, body, aad)
    }
}

/// Supplies data keys by id, so keys can rotate and come from any key store.
pub trait KeyProvider: Send + Sync {
    /// The id new writes use.
    fn current_key_id(&self) -> String;
    /// The key with this id.
    fn key(&self, key_id: &str) -> Result<[u8; KEY_LEN], CodecError>;
}

/// Keys from the environment: `ZU_EVENT_KEY_<id>` (hex or base64), the
/// current id in `ZU_EVENT_KEY_ID` (default `default`, whose key may also be
/// the bare `ZU_EVENT_KEY`). Rotate by adding a key and moving the id; keep
/// the old variables so old rows decrypt.
pub struct EnvKeyProvider {
    current: String,
}

impl EnvKeyProvider {
    /// Reads the current id from `ZU_EVENT_KEY_ID`.
    pub fn from_env() -> Self {
        EnvKeyProvider {
            current: std::env::var("ZU_EVENT_KEY_ID").unwrap_or_else(|_| "default".into()),
        }
    }
}

impl KeyProvider for EnvKeyProvider {
    fn current_key_id(&self) -> String {
        self.current.clone()
    }
    fn key(&self, key_id: &str) -> Result<[u8; KEY_LEN], CodecError> {
        let var = format!("ZU_EVENT_KEY_{key_id}");
        let raw = std::env::var(&var)
            .ok()
            .or_else(|| (key_id == "default").then(|| std::env::var("ZU_EVENT_KEY").ok()).flatten())
            .ok_or_else(|| {
                CodecError::Key(format!(
                    "no key for id {key_id:?}: set {var} to a 32-byte hex or base64 key (after rotating, keep old keys so old rows decrypt)"
                ))
            })?;
        decode_key(&raw, &var)
    }
}

/// AES-256-GCM keyed by a [`KeyProvider`] (version 2):
/// `[kid_len][kid][nonce][ciphertext+tag]`, the key id bound into the AAD.
pub struct ManagedAesGcmCodec {
    keys: Arc<dyn KeyProvider>,
}

impl ManagedAesGcmCodec {
    /// A codec taking keys from `keys`.
    pub fn new(keys: Arc<dyn KeyProvider>) -> Self {
        ManagedAesGcmCodec { keys }
    }
}

fn bind_kid(aad: &[u8], kid: &[u8]) -> Vec<u8> {
    let mut out = aad.to_vec();
    out.push(kid.len() as u8);
    out.extend_from_slice(kid);
    out
}

impl PayloadCodec for ManagedAesGcmCodec {
    fn version(&self) -> u8 {
        2
    }
    fn encode_body(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, CodecError> {
        let kid = self.keys.current_key_id();
        let kid_b = kid.as_bytes();
        if kid_b.is_empty() || kid_b.len() > 255 {
            return Err(CodecError::Key(format!(
                "key id must be 1..255 bytes, got {}",
                kid_b.len()
            )));
        }
        let mut out = vec![kid_b.len() as u8];
        out.extend_from_slice(kid_b);
        out.extend(seal(&self.keys.key(&kid)?, plaintext, &bind_kid(aad, kid_b))?);
        Ok(out)
    }
    fn decode_body(&self, body: &[u8], aad: &[u8]) -> Result<Vec<u8>, CodecError> {
        let (&len, rest) = body.split_first().ok_or(CodecError::Truncated)?;
        if rest.len() < len as usize {
            return Err(CodecError::Truncated);
        }
        let (kid_b, sealed) = rest.split_at(len as usize);
        let kid = std::str::from_utf8(kid_b).map_err(|_| CodecError::Decrypt)?;
        open(&self.keys.key(kid)?, sealed, &bind_kid(aad, kid_b))
    }
}

/// Decodes a 32-byte key given as hex or base64.
pub fn decode_key(raw: &str, what: &str) -> Result<[u8; KEY_LEN], CodecError> {
    let raw = raw.trim();
    let bytes = if raw.len() == KEY_LEN * 2 && raw.bytes().all(|b| b.is_ascii_hexdigit()) {
        (0..KEY_LEN)
            .map(|i| u8::from_str_radix(&raw[2 * i..2 * i + 2], 16).expect("checked hex"))
            .collect()
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(raw)
            .map_err(|_| CodecError::Key(format!("{what} must be a 32-byte key as hex or base64")))?
    };
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| CodecError::Key(format!("{what} must be a 32-byte key, got {} bytes", b.len())))
}

/// The associated data of one stored row: its indexed columns, joined by the
/// unit separator (which appears in none of them).
pub fn row_aad(event_id: &str, trace_id: &str, task_id: &str, ty: &str, source: &str) -> Vec<u8> {
    [event_id, trace_id, task_id, ty, source].join("\x1f").into_bytes()
}

/// The codec a sink writes with, plus every codec it can read.
#[derive(Clone)]
pub struct Codecs {
    writer: Arc<dyn PayloadCodec>,
    readers: HashMap<u8, Arc<dyn PayloadCodec>>,
}

impl Codecs {
    /// Writes with `writer`; reads plaintext rows and `writer`'s rows.
    pub fn new(writer: Arc<dyn PayloadCodec>) -> Self {
        let mut readers: HashMap<u8, Arc<dyn PayloadCodec>> = HashMap::new();
        readers.insert(0, Arc::new(IdentityCodec));
        readers.insert(writer.version(), writer.clone());
        Codecs { writer, readers }
    }

    /// Plaintext.
    pub fn plaintext() -> Self {
        Codecs::new(Arc::new(IdentityCodec))
    }

    /// Also reads rows of `codec`'s version (e.g. an old key after switching codec).
    pub fn with_reader(mut self, codec: Arc<dyn PayloadCodec>) -> Self {
        self.readers.insert(codec.version(), codec);
        self
    }

    /// From a sink config's `codec` value: `null`/`"plaintext"`,
    /// `{"kind": "aes-gcm", "key_env": "ZU_EVENT_KEY"}`, or `{"kind": "managed-aes-gcm"}`.
    pub fn from_config(value: Option<&Value>) -> Result<Self, CodecError> {
        match value {
            None | Some(Value::Null) => Ok(Codecs::plaintext()),
            Some(Value::String(s)) if s == "plaintext" => Ok(Codecs::plaintext()),
            Some(Value::Object(o)) => match o.get("kind").and_then(Value::as_str) {
                Some("plaintext") => Ok(Codecs::plaintext()),
                Some("aes-gcm") => {
                    let var = o.get("key_env").and_then(Value::as_str).unwrap_or("ZU_EVENT_KEY");
                    Ok(Codecs::new(Arc::new(AesGcmCodec::from_env(var)?)))
                }
                Some("managed-aes-gcm") => Ok(Codecs::new(Arc::new(ManagedAesGcmCodec::new(Arc::new(
                    EnvKeyProvider::from_env(),
                ))))),
                other => Err(CodecError::Config(format!("unknown codec kind {other:?}"))),
            },
            Some(other) => Err(CodecError::Config(format!("got {other}"))),
        }
    }

    /// `[version][body]`.
    pub fn encode(&self, plaintext: &str, aad: &[u8]) -> Result<Vec<u8>, CodecError> {
        let mut out = vec![self.writer.version()];
        out.extend(self.writer.encode_body(plaintext.as_bytes(), aad)?);
        Ok(out)
    }

    /// Decodes a blob by its own version byte.
    pub fn decode(&self, blob: &[u8], aad: &[u8]) -> Result<String, CodecError> {
        let (&version, body) = blob.split_first().ok_or(CodecError::Empty)?;
        let codec = self.readers.get(&version).ok_or(CodecError::UnknownVersion(version))?;
        String::from_utf8(codec.decode_body(body, aad)?).map_err(|_| CodecError::Utf8)
    }

    /// The event stored as row `seq`: `blob` decoded under the associated
    /// data of the row's columns (`[event_id, trace_id, task_id, type,
    /// source]`, see [`row_aad`]) and read as an event; or why it is not one.
    pub fn decode_event(
        &self,
        seq: u64,
        columns: [&str; 5],
        blob: &[u8],
    ) -> Result<zu_plugin_api::contracts::Event, String> {
        let [id, trace, task, ty, source] = columns;
        let text = self
            .decode(blob, &row_aad(id, trace, task, ty, source))
            .map_err(|e| format!("event {id} (seq {seq}): {e}"))?;
        serde_json::from_str(&text).map_err(|e| format!("event {id} (seq {seq}) is not a valid event: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Keys(String, HashMap<String, [u8; KEY_LEN]>);
    impl KeyProvider for Keys {
        fn current_key_id(&self) -> String {
            self.0.clone()
        }
        fn key(&self, id: &str) -> Result<[u8; KEY_LEN], CodecError> {
            self.1
                .get(id)
                .copied()
                .ok_or_else(|| CodecError::Key(format!("no key {id}")))
        }
    }

    const AAD: &[u8] = b"e\x1ft\x1fk\x1fharness.x\x1fs";

    #[test]
    fn every_codec_round_trips_and_tags_its_version() {
        let keys = Arc::new(Keys("k1".into(), HashMap::from([("k1".into(), [7; 32])])));
        for codec in [
            Arc::new(IdentityCodec) as Arc<dyn PayloadCodec>,
            Arc::new(AesGcmCodec::new([1; 32])),
            Arc::new(ManagedAesGcmCodec::new(keys)),
        ] {
            let c = Codecs::new(codec.clone());
            let blob = c.encode("{\"a\": 1}", AAD).unwrap();
            assert_eq!(blob[0], codec.version());
            assert_eq!(c.decode(&blob, AAD).unwrap(), "{\"a\": 1}");
            if codec.version() != 0 {
                assert!(
                    !blob.windows(3).any(|w| w == b"\"a\""),
                    "ciphertext hides the plaintext"
                );
            }
        }
    }

    #[test]
    fn a_log_of_mixed_codecs_reads_back() {
        let plain = Codecs::plaintext().encode("old", AAD).unwrap();
        let enc = Codecs::new(Arc::new(AesGcmCodec::new([1; 32])));
        let new = enc.encode("new", AAD).unwrap();
        assert_eq!(enc.decode(&plain, AAD).unwrap(), "old");
        assert_eq!(enc.decode(&new, AAD).unwrap(), "new");
        assert_eq!(
            Codecs::plaintext().decode(&new, AAD),
            Err(CodecError::UnknownVersion(1))
        );
    }

    #[test]
    fn wrong_key_moved_row_and_tampered_byte_fail_to_decrypt() {
        let c = Codecs::new(Arc::new(AesGcmCodec::new([1; 32])));
        let blob = c.encode("secret", AAD).unwrap();
        let other = Codecs::new(Arc::new(AesGcmCodec::new([2; 32])));
        assert_eq!(other.decode(&blob, AAD), Err(CodecError::Decrypt));
        assert_eq!(
            c.decode(&blob, b"e2\x1ft\x1fk\x1fharness.x\x1fs"),
            Err(CodecError::Decrypt)
        );
        let mut tampered = blob.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(c.decode(&tampered, AAD), Err(CodecError::Decrypt));
        assert_eq!(c.decode(&blob[..5], AAD), Err(CodecError::Truncated));
        assert_eq!(c.decode(&[], AAD), Err(CodecError::Empty));
    }

    #[test]
    fn rotated_keys_still_decrypt_old_rows_and_the_key_id_is_authenticated() {
        let table = HashMap::from([("a".to_owned(), [3; 32]), ("b".to_owned(), [4; 32])]);
        let old = Codecs::new(Arc::new(ManagedAesGcmCodec::new(Arc::new(Keys(
            "a".into(),
            table.clone(),
        )))));
        let blob = old.encode("under a", AAD).unwrap();
        let rotated = Codecs::new(Arc::new(ManagedAesGcmCodec::new(Arc::new(Keys("b".into(), table)))));
        assert_eq!(rotated.decode(&blob, AAD).unwrap(), "under a");
        assert_eq!(rotated.encode("x", AAD).unwrap()[2], b'b');
        let mut relabeled = blob.clone();
        relabeled[2] = b'b'; // point the row at another key
        assert_eq!(rotated.decode(&relabeled, AAD), Err(CodecError::Decrypt));
    }

    #[test]
    fn keys_decode_from_hex_or_base64_and_configs_are_checked() {
        let hex = "00".repeat(32);
        assert_eq!(decode_key(&hex, "K").unwrap(), [0; 32]);
        let b64 = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
        assert_eq!(decode_key(&b64, "K").unwrap(), [9; 32]);
        assert!(matches!(decode_key("abcd", "K"), Err(CodecError::Key(_))));
        assert!(matches!(
            Codecs::from_config(Some(&serde_json::json!({"kind": "rot13"}))),
            Err(CodecError::Config(_))
        ));
        assert!(matches!(
            Codecs::from_config(Some(
                &serde_json::json!({"kind": "aes-gcm", "key_env": "ZU_TEST_NO_SUCH_VAR"})
            )),
            Err(CodecError::Key(_))
        ));
        assert!(Codecs::from_config(None).is_ok());
    }
}
