//! Encryption at rest (upstream's EncryptionConfiguration, `--encryption-provider-config`):
//! values of the configured resources are encrypted by the first provider of their rule
//! before they are stored, and decrypted by whichever provider and key their prefix names
//! (`k8s:enc:aescbc:v1:<key>:`), so keys rotate by putting a new one first, rewriting the
//! objects, and dropping the old one.

use std::sync::Arc;

use aes::cipher::block_padding::Pkcs7;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use aes_gcm::aead::{Aead, KeyInit, Payload};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use kelp_storage::{StorageError, Transformer};
use serde_json::Value;

use crate::registry;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    AesCbc,
    AesGcm,
    Secretbox,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::AesCbc => "aescbc",
            Kind::AesGcm => "aesgcm",
            Kind::Secretbox => "secretbox",
        }
    }
}

#[derive(Debug)]
enum Provider {
    Identity,
    Keys(Kind, Vec<(String, Vec<u8>)>),
}

#[derive(Debug)]
struct Rule {
    prefixes: Vec<String>,
    providers: Vec<Provider>,
}

/// The configured encryption, as a storage transformer.
#[derive(Debug)]
pub struct Encryption {
    rules: Vec<Rule>,
}

fn bad(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// The key prefixes a configuration's resource names cover: `secrets`, `deployments.apps`,
/// `*.apps`, `*.` (the core group) and `*.*` (everything).
fn prefixes(resource: &str) -> Vec<String> {
    if resource == "*.*" {
        return vec!["/registry/".into()];
    }
    let (plural, group) = resource.split_once('.').unwrap_or((resource, ""));
    let builtin: Vec<String> = registry::all()
        .filter(|r| r.group == group && (plural == "*" || r.plural == plural))
        .map(|r| r.key_prefix(None))
        .collect();
    if !builtin.is_empty() || plural == "*" {
        let mut out = builtin;
        out.dedup();
        return out;
    }
    vec![format!("/registry/{group}/{plural}/")]
}

impl Encryption {
    pub fn parse(text: &str) -> Result<Encryption, String> {
        let config: Value = serde_saphyr::from_str(text).map_err(bad)?;
        if config.get("kind").and_then(Value::as_str) != Some("EncryptionConfiguration") {
            return Err("not an EncryptionConfiguration".into());
        }
        let mut rules = Vec::new();
        for (i, entry) in config
            .get("resources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let names: Vec<&str> = entry
                .get("resources")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if names.is_empty() {
                return Err(format!("resources[{i}].resources: Required value"));
            }
            let mut providers = Vec::new();
            for p in entry
                .get("providers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let Some((name, body)) = p.as_object().and_then(|o| o.iter().next()) else {
                    continue;
                };
                let kind = match name.as_str() {
                    "identity" => {
                        providers.push(Provider::Identity);
                        continue;
                    }
                    "aescbc" => Kind::AesCbc,
                    "aesgcm" => Kind::AesGcm,
                    "secretbox" => Kind::Secretbox,
                    other => {
                        return Err(format!(
                            "resources[{i}].providers: provider {other:?} is not supported"
                        ));
                    }
                };
                let mut keys = Vec::new();
                for k in body
                    .get("keys")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let key_name = k
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                    let secret = STANDARD
                        .decode(k.get("secret").and_then(Value::as_str).unwrap_or(""))
                        .map_err(|e| format!("key {key_name:?}: secret is not base64: {e}"))?;
                    let sizes: &[usize] = if kind == Kind::Secretbox {
                        &[32]
                    } else {
                        &[16, 24, 32]
                    };
                    if key_name.is_empty() || !sizes.contains(&secret.len()) {
                        return Err(format!(
                            "key {key_name:?} of {}: needs a name and a secret of {sizes:?} bytes",
                            kind.name()
                        ));
                    }
                    keys.push((key_name, secret));
                }
                if keys.is_empty() {
                    return Err(format!(
                        "resources[{i}].providers.{}: keys: Required value",
                        kind.name()
                    ));
                }
                providers.push(Provider::Keys(kind, keys));
            }
            if providers.is_empty() {
                return Err(format!("resources[{i}].providers: Required value"));
            }
            rules.push(Rule {
                prefixes: names.iter().flat_map(|n| prefixes(n)).collect(),
                providers,
            });
        }
        Ok(Encryption { rules })
    }

    pub fn from_file(path: &std::path::Path) -> Result<Arc<dyn Transformer>, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let parsed = Encryption::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Arc::new(parsed))
    }

    fn rule(&self, key: &[u8]) -> Option<&Rule> {
        self.rules
            .iter()
            .find(|r| r.prefixes.iter().any(|p| key.starts_with(p.as_bytes())))
    }
}

fn seal(kind: Kind, secret: &[u8], key: &[u8], plain: &[u8]) -> Result<Vec<u8>, String> {
    match kind {
        Kind::AesCbc => {
            let iv: [u8; 16] = rand::random();
            let sealed = match secret.len() {
                16 => cbc::Encryptor::<aes::Aes128>::new_from_slices(secret, &iv)
                    .map_err(bad)?
                    .encrypt_padded_vec_mut::<Pkcs7>(plain),
                24 => cbc::Encryptor::<aes::Aes192>::new_from_slices(secret, &iv)
                    .map_err(bad)?
                    .encrypt_padded_vec_mut::<Pkcs7>(plain),
                _ => cbc::Encryptor::<aes::Aes256>::new_from_slices(secret, &iv)
                    .map_err(bad)?
                    .encrypt_padded_vec_mut::<Pkcs7>(plain),
            };
            Ok([iv.as_slice(), &sealed].concat())
        }
        Kind::AesGcm => {
            let nonce: [u8; 12] = rand::random();
            // The storage key is the authenticated data: a value cannot be moved to another key.
            let payload = Payload {
                msg: plain,
                aad: key,
            };
            let sealed = match secret.len() {
                16 => aes_gcm::Aes128Gcm::new_from_slice(secret)
                    .map_err(bad)?
                    .encrypt((&nonce).into(), payload),
                24 => aes_gcm::AesGcm::<aes::Aes192, aes_gcm::aead::consts::U12>::new_from_slice(
                    secret,
                )
                .map_err(bad)?
                .encrypt((&nonce).into(), payload),
                _ => aes_gcm::Aes256Gcm::new_from_slice(secret)
                    .map_err(bad)?
                    .encrypt((&nonce).into(), payload),
            }
            .map_err(bad)?;
            Ok([nonce.as_slice(), &sealed].concat())
        }
        Kind::Secretbox => {
            let nonce: [u8; 24] = rand::random();
            let sealed = crypto_secretbox::XSalsa20Poly1305::new_from_slice(secret)
                .map_err(bad)?
                .encrypt((&nonce).into(), plain)
                .map_err(bad)?;
            Ok([nonce.as_slice(), &sealed].concat())
        }
    }
}

fn open(kind: Kind, secret: &[u8], key: &[u8], data: &[u8]) -> Result<Vec<u8>, String> {
    let short = || "the stored value is too short".to_string();
    match kind {
        Kind::AesCbc => {
            if data.len() < 16 {
                return Err(short());
            }
            let (iv, sealed) = data.split_at(16);
            match secret.len() {
                16 => cbc::Decryptor::<aes::Aes128>::new_from_slices(secret, iv)
                    .map_err(bad)?
                    .decrypt_padded_vec_mut::<Pkcs7>(sealed),
                24 => cbc::Decryptor::<aes::Aes192>::new_from_slices(secret, iv)
                    .map_err(bad)?
                    .decrypt_padded_vec_mut::<Pkcs7>(sealed),
                _ => cbc::Decryptor::<aes::Aes256>::new_from_slices(secret, iv)
                    .map_err(bad)?
                    .decrypt_padded_vec_mut::<Pkcs7>(sealed),
            }
            .map_err(|_| "invalid padding on input".to_string())
        }
        Kind::AesGcm => {
            if data.len() < 12 {
                return Err(short());
            }
            let (nonce, sealed) = data.split_at(12);
            let nonce: [u8; 12] = nonce.try_into().map_err(bad)?;
            let nonce = &nonce.into();
            let payload = Payload {
                msg: sealed,
                aad: key,
            };
            match secret.len() {
                16 => aes_gcm::Aes128Gcm::new_from_slice(secret)
                    .map_err(bad)?
                    .decrypt(nonce, payload),
                24 => aes_gcm::AesGcm::<aes::Aes192, aes_gcm::aead::consts::U12>::new_from_slice(
                    secret,
                )
                .map_err(bad)?
                .decrypt(nonce, payload),
                _ => aes_gcm::Aes256Gcm::new_from_slice(secret)
                    .map_err(bad)?
                    .decrypt(nonce, payload),
            }
            .map_err(|_| "cipher: message authentication failed".to_string())
        }
        Kind::Secretbox => {
            if data.len() < 24 {
                return Err(short());
            }
            let (nonce, sealed) = data.split_at(24);
            let nonce: [u8; 24] = nonce.try_into().map_err(bad)?;
            crypto_secretbox::XSalsa20Poly1305::new_from_slice(secret)
                .map_err(bad)?
                .decrypt((&nonce).into(), sealed)
                .map_err(|_| "output array is too small".to_string())
        }
    }
}

const PREFIX: &[u8] = b"k8s:enc:";

impl Transformer for Encryption {
    fn covers(&self, key: &[u8]) -> bool {
        self.rule(key).is_some()
    }

    fn write_stored(&self, key: &[u8], value: Vec<u8>) -> kelp_storage::Result<Vec<u8>> {
        let Some(rule) = self.rule(key) else {
            return Ok(value);
        };
        match &rule.providers[0] {
            Provider::Identity => Ok(value),
            Provider::Keys(kind, keys) => {
                let (name, secret) = &keys[0];
                let sealed = seal(*kind, secret, key, &value).map_err(StorageError::Transform)?;
                let mut out = format!("k8s:enc:{}:v1:{name}:", kind.name()).into_bytes();
                out.extend(sealed);
                Ok(out)
            }
        }
    }

    fn read_stored(&self, key: &[u8], value: Vec<u8>) -> kelp_storage::Result<Vec<u8>> {
        let Some(rule) = self.rule(key) else {
            return Ok(value);
        };
        let fail = |why: String| {
            StorageError::Transform(format!(
                "unable to transform key {:?}: {why}",
                String::from_utf8_lossy(key)
            ))
        };
        let Some(rest) = value.strip_prefix(PREFIX) else {
            if rule
                .providers
                .iter()
                .any(|p| matches!(p, Provider::Identity))
            {
                return Ok(value);
            }
            return Err(fail("no matching prefix found".into()));
        };
        for p in &rule.providers {
            let Provider::Keys(kind, keys) = p else {
                continue;
            };
            let Some(after) = rest
                .strip_prefix(kind.name().as_bytes())
                .and_then(|r| r.strip_prefix(b":v1:"))
            else {
                continue;
            };
            for (name, secret) in keys {
                if let Some(data) = after
                    .strip_prefix(name.as_bytes())
                    .and_then(|r| r.strip_prefix(b":"))
                {
                    return open(*kind, secret, key, data).map_err(fail);
                }
            }
        }
        Err(fail("no matching prefix found".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(providers: &str) -> Encryption {
        Encryption::parse(&format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n{providers}"
        ))
        .unwrap()
    }

    const K1: &str = "MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTI=";
    const K2: &str = "YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXphYmNkZWY=";

    #[test]
    fn each_provider_round_trips_and_only_the_configured_resources_are_sealed() {
        let key = b"/registry/secrets/default/s";
        for kind in ["aescbc", "aesgcm", "secretbox"] {
            let e = config(&format!(
                "  - {kind}:\n      keys:\n      - {{name: k1, secret: {K1}}}\n"
            ));
            let sealed = e
                .write_stored(key, b"{\"data\":\"hush\"}".to_vec())
                .unwrap();
            assert!(
                sealed.starts_with(format!("k8s:enc:{kind}:v1:k1:").as_bytes()),
                "{kind}"
            );
            assert!(!sealed.windows(4).any(|w| w == b"hush"));
            assert_eq!(e.read_stored(key, sealed).unwrap(), b"{\"data\":\"hush\"}");
            let other = b"/registry/configmaps/default/c";
            assert_eq!(e.write_stored(other, b"plain".to_vec()).unwrap(), b"plain");
        }
    }

    #[test]
    fn keys_rotate_and_values_without_a_known_prefix_need_identity() {
        let key = b"/registry/secrets/default/s";
        let old = config(&format!(
            "  - aescbc:\n      keys:\n      - {{name: k1, secret: {K1}}}\n"
        ));
        let sealed = old.write_stored(key, b"v".to_vec()).unwrap();
        let both = config(&format!(
            "  - aescbc:\n      keys:\n      - {{name: k2, secret: {K2}}}\n      - {{name: k1, secret: {K1}}}\n"
        ));
        assert_eq!(both.read_stored(key, sealed.clone()).unwrap(), b"v");
        assert!(
            both.write_stored(key, b"v".to_vec())
                .unwrap()
                .starts_with(b"k8s:enc:aescbc:v1:k2:")
        );
        let new = config(&format!(
            "  - aescbc:\n      keys:\n      - {{name: k2, secret: {K2}}}\n"
        ));
        assert!(new.read_stored(key, sealed).is_err());
        assert!(new.read_stored(key, b"{}".to_vec()).is_err());
        let migrating = config(&format!(
            "  - aescbc:\n      keys:\n      - {{name: k2, secret: {K2}}}\n  - identity: {{}}\n"
        ));
        assert_eq!(migrating.read_stored(key, b"{}".to_vec()).unwrap(), b"{}");
        assert!(Encryption::parse("kind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - kms: {}\n").is_err());
    }
}
