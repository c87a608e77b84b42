//! Service-account tokens: ES256 JWTs signed by a key kept in `<data-dir>/pki/sa.key`.
//! Bound tokens (TokenRequest) carry upstream's `kubernetes.io` claims: audiences, expiry and
//! the objects they are bound to; legacy tokens (secrets of type
//! `kubernetes.io/service-account-token`) carry the older flat claims and never expire.
//! Whether the objects a token names still exist is for the caller to check.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};
use sha2::Digest;

use crate::pki::{PkiError, write_private};

/// The issuer of legacy secret-based tokens.
pub const LEGACY_ISSUER: &str = "kubernetes/serviceaccount";
/// The issuer kubeadm and kind configure, which Kelp uses too.
pub const DEFAULT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// Clock skew tolerated on exp/nbf, as upstream's validator allows.
pub const LEEWAY_SECONDS: i64 = 60;

/// An object a bound token names, by name and uid.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ObjectRef {
    pub name: String,
    pub uid: String,
}

/// What a token request asks for.
pub struct TokenSpec<'a> {
    pub namespace: &'a str,
    pub service_account: ObjectRef,
    pub audiences: &'a [String],
    /// Unix seconds.
    pub issued_at: i64,
    pub expiration_seconds: i64,
    pub pod: Option<ObjectRef>,
    pub secret: Option<ObjectRef>,
    pub node: Option<ObjectRef>,
}

/// A token whose signature, issuer, audience and times check out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub namespace: String,
    pub service_account: ObjectRef,
    pub pod: Option<ObjectRef>,
    pub secret: Option<ObjectRef>,
    pub node: Option<ObjectRef>,
    /// The token's id (bound tokens), upstream's credential id.
    pub jti: Option<String>,
    /// For legacy tokens: the secret that holds the token (which must still hold it).
    pub legacy_secret: Option<String>,
}

pub struct ServiceAccountKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    kid: String,
    /// The public point's coordinates, base64url (the JWK's x and y).
    x: String,
    y: String,
    pub issuer: String,
    /// The audiences a bound token must name one of (the API server's); by default the issuer.
    pub audiences: Vec<String>,
    /// The signing key, PEM (PKCS#8), for tests and tools that mint tokens.
    pub private_pem: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Not a token this issuer signed: another authenticator may know it.
    #[error("not a service account token")]
    NotOurs,
    #[error("{0}")]
    Invalid(String),
}

impl ServiceAccountKeys {
    /// Loads the signing key from `<data_dir>/pki/sa.key`, creating it on first start.
    pub fn load_or_create(data_dir: &Path, issuer: &str) -> Result<ServiceAccountKeys, PkiError> {
        let path = data_dir.join("pki").join("sa.key");
        let pem = match std::fs::read_to_string(&path) {
            Ok(pem) => pem,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|source| PkiError::Io {
                        path: dir.to_path_buf(),
                        source,
                    })?;
                }
                let pem = rcgen::KeyPair::generate()?.serialize_pem();
                write_private(&path, &pem)?;
                pem
            }
            Err(source) => return Err(PkiError::Io { path, source }),
        };
        ServiceAccountKeys::from_pem(&pem, issuer)
    }

    pub fn from_pem(private_pem: &str, issuer: &str) -> Result<ServiceAccountKeys, PkiError> {
        let pair = rcgen::KeyPair::from_pem(private_pem)?;
        let bad = |e: jsonwebtoken::errors::Error| PkiError::Key(e.to_string());
        let encoding = EncodingKey::from_ec_pem(private_pem.as_bytes()).map_err(bad)?;
        let decoding = DecodingKey::from_ec_pem(pair.public_key_pem().as_bytes()).map_err(bad)?;
        let raw = pair.public_key_raw();
        // An uncompressed P-256 point: 0x04 || X (32) || Y (32).
        let (x, y) = if raw.len() == 65 {
            (
                URL_SAFE_NO_PAD.encode(&raw[1..33]),
                URL_SAFE_NO_PAD.encode(&raw[33..]),
            )
        } else {
            return Err(PkiError::Key(
                "the service-account key is not a P-256 key".into(),
            ));
        };
        Ok(ServiceAccountKeys {
            encoding,
            decoding,
            kid: URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(
                rcgen::PublicKeyData::subject_public_key_info(&pair),
            )),
            x,
            y,
            issuer: issuer.to_string(),
            audiences: vec![issuer.to_string()],
            private_pem: private_pem.to_string(),
        })
    }

    fn header(&self) -> Header {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        header.typ = None;
        header
    }

    /// Signs any claims with the service-account key (tests mint odd tokens with it).
    pub fn sign(&self, claims: &Value) -> String {
        jsonwebtoken::encode(&self.header(), claims, &self.encoding).unwrap_or_default()
    }

    /// A bound token, and its expiry (unix seconds).
    pub fn issue(&self, spec: &TokenSpec<'_>) -> (String, i64) {
        let exp = spec.issued_at + spec.expiration_seconds;
        let reference = |r: &ObjectRef| json!({"name": r.name, "uid": r.uid});
        let mut private = json!({
            "namespace": spec.namespace,
            "serviceaccount": reference(&spec.service_account),
        });
        if let Some(pod) = &spec.pod {
            private["pod"] = reference(pod);
        }
        if let Some(secret) = &spec.secret {
            private["secret"] = reference(secret);
        }
        if let Some(node) = &spec.node {
            private["node"] = reference(node);
        }
        let claims = json!({
            "aud": spec.audiences,
            "exp": exp,
            "iat": spec.issued_at,
            "iss": self.issuer,
            "jti": uuid::Uuid::new_v4().to_string(),
            "kubernetes.io": private,
            "nbf": spec.issued_at,
            "sub": crate::user::service_account_user(spec.namespace, &spec.service_account.name),
        });
        (self.sign(&claims), exp)
    }

    /// A legacy token for the service account, to be kept in `secret`.
    pub fn issue_legacy(&self, namespace: &str, sa: &ObjectRef, secret: &str) -> String {
        self.sign(&json!({
            "iss": LEGACY_ISSUER,
            "kubernetes.io/serviceaccount/namespace": namespace,
            "kubernetes.io/serviceaccount/secret.name": secret,
            "kubernetes.io/serviceaccount/service-account.name": sa.name,
            "kubernetes.io/serviceaccount/service-account.uid": sa.uid,
            "sub": crate::user::service_account_user(namespace, &sa.name),
        }))
    }

    /// Checks the signature, issuer, audiences and times of a token (`now` in unix seconds).
    pub fn verify(&self, token: &str, now: i64) -> Result<Verified, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::NotOurs)?;
        // The issuer decides whether this authenticator speaks for the token at all.
        let claims = unverified_claims(token).ok_or(TokenError::NotOurs)?;
        let issuer = claims.get("iss").and_then(Value::as_str).unwrap_or("");
        if issuer != self.issuer && issuer != LEGACY_ISSUER {
            return Err(TokenError::NotOurs);
        }
        if header.alg != Algorithm::ES256 {
            return Err(TokenError::Invalid(format!(
                "invalid signature: unsupported algorithm {:?}",
                header.alg
            )));
        }
        let mut validation = Validation::new(Algorithm::ES256);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_aud = false;
        jsonwebtoken::decode::<Value>(token, &self.decoding, &validation)
            .map_err(|_| TokenError::Invalid("invalid signature".to_string()))?;
        let text = |v: &Value, p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_string);
        if issuer == LEGACY_ISSUER {
            let flat = |k: &str| claims.get(k).and_then(Value::as_str).map(str::to_string);
            let (Some(namespace), Some(name), Some(uid), Some(secret)) = (
                flat("kubernetes.io/serviceaccount/namespace"),
                flat("kubernetes.io/serviceaccount/service-account.name"),
                flat("kubernetes.io/serviceaccount/service-account.uid"),
                flat("kubernetes.io/serviceaccount/secret.name"),
            ) else {
                return Err(TokenError::Invalid(
                    "service account token is missing claims".to_string(),
                ));
            };
            return Ok(Verified {
                namespace,
                service_account: ObjectRef { name, uid },
                pod: None,
                secret: None,
                node: None,
                jti: None,
                legacy_secret: Some(secret),
            });
        }
        let audiences: Vec<&str> = match claims.get("aud") {
            Some(Value::String(a)) => vec![a.as_str()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !audiences
            .iter()
            .any(|a| self.audiences.iter().any(|ours| ours == a))
        {
            return Err(TokenError::Invalid(
                "token audiences is invalid".to_string(),
            ));
        }
        let time = |k: &str| claims.get(k).and_then(Value::as_i64);
        match time("exp") {
            Some(exp) if now > exp + LEEWAY_SECONDS => {
                return Err(TokenError::Invalid(
                    "service account token has expired".to_string(),
                ));
            }
            Some(_) => {}
            None => {
                return Err(TokenError::Invalid(
                    "service account token is missing exp".to_string(),
                ));
            }
        }
        if let Some(nbf) = time("nbf")
            && now + LEEWAY_SECONDS < nbf
        {
            return Err(TokenError::Invalid(
                "service account token is not valid yet".to_string(),
            ));
        }
        let private = claims.get("kubernetes.io").cloned().unwrap_or(Value::Null);
        let object = |kind: &str| -> Option<ObjectRef> {
            let name = text(&private, &format!("/{kind}/name"))?;
            Some(ObjectRef {
                name,
                uid: text(&private, &format!("/{kind}/uid")).unwrap_or_default(),
            })
        };
        let (Some(namespace), Some(service_account)) =
            (text(&private, "/namespace"), object("serviceaccount"))
        else {
            return Err(TokenError::Invalid(
                "service account token claims are missing".to_string(),
            ));
        };
        Ok(Verified {
            namespace,
            service_account,
            pod: object("pod"),
            secret: object("secret"),
            node: object("node"),
            jti: claims
                .get("jti")
                .and_then(Value::as_str)
                .map(str::to_string),
            legacy_secret: None,
        })
    }

    /// The JSON Web Key Set verifiers use (`/openid/v1/jwks`).
    pub fn jwks(&self) -> Value {
        json!({"keys": [{
            "use": "sig",
            "kty": "EC",
            "kid": self.kid,
            "crv": "P-256",
            "alg": "ES256",
            "x": self.x,
            "y": self.y,
        }]})
    }

    /// `/.well-known/openid-configuration`, pointing at `jwks_uri`.
    pub fn openid_configuration(&self, jwks_uri: &str) -> Value {
        json!({
            "issuer": self.issuer,
            "jwks_uri": jwks_uri,
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
        })
    }
}

/// The claims of a JWT, unverified (to route it to the authenticator that can verify it).
fn unverified_claims(token: &str) -> Option<Value> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> ServiceAccountKeys {
        let dir = tempfile::tempdir().unwrap();
        ServiceAccountKeys::load_or_create(dir.path(), DEFAULT_ISSUER).unwrap()
    }

    fn spec<'a>(audiences: &'a [String], issued_at: i64) -> TokenSpec<'a> {
        TokenSpec {
            namespace: "dev",
            service_account: ObjectRef {
                name: "builder".into(),
                uid: "sa-uid".into(),
            },
            audiences,
            issued_at,
            expiration_seconds: 3600,
            pod: Some(ObjectRef {
                name: "web".into(),
                uid: "pod-uid".into(),
            }),
            secret: None,
            node: None,
        }
    }

    #[test]
    fn bound_tokens_verify_until_they_expire_and_only_for_our_audiences() {
        let keys = keys();
        let ours = keys.audiences.clone();
        let (token, exp) = keys.issue(&spec(&ours, 1_000_000));
        assert_eq!(exp, 1_003_600);
        let v = keys.verify(&token, 1_000_010).unwrap();
        assert_eq!(v.namespace, "dev");
        assert_eq!(v.service_account.uid, "sa-uid");
        assert_eq!(v.pod.as_ref().unwrap().name, "web");
        assert!(v.jti.is_some());
        assert_eq!(
            keys.verify(&token, exp + LEEWAY_SECONDS + 1),
            Err(TokenError::Invalid(
                "service account token has expired".into()
            ))
        );
        let elsewhere = vec!["vault".to_string()];
        let (token, _) = keys.issue(&spec(&elsewhere, 1_000_000));
        assert!(matches!(
            keys.verify(&token, 1_000_010),
            Err(TokenError::Invalid(_))
        ));
    }

    #[test]
    fn tokens_signed_by_another_key_or_issuer_are_refused() {
        let (ours, theirs) = (keys(), keys());
        let aud = ours.audiences.clone();
        let (token, _) = theirs.issue(&spec(&aud, 1_000_000));
        assert_eq!(
            ours.verify(&token, 1_000_010),
            Err(TokenError::Invalid("invalid signature".into()))
        );
        let foreign = ours.sign(&json!({"iss": "https://accounts.example", "exp": 2_000_000}));
        assert_eq!(ours.verify(&foreign, 1_000_010), Err(TokenError::NotOurs));
        assert_eq!(ours.verify("opaque-token", 1), Err(TokenError::NotOurs));
    }

    #[test]
    fn legacy_tokens_name_their_secret_and_do_not_expire() {
        let keys = keys();
        let sa = ObjectRef {
            name: "builder".into(),
            uid: "sa-uid".into(),
        };
        let token = keys.issue_legacy("dev", &sa, "builder-token");
        let v = keys.verify(&token, i64::MAX / 2).unwrap();
        assert_eq!(v.legacy_secret.as_deref(), Some("builder-token"));
        assert_eq!(v.service_account, sa);
    }

    #[test]
    fn the_jwks_names_the_key_tokens_carry() {
        let keys = keys();
        let aud = keys.audiences.clone();
        let (token, _) = keys.issue(&spec(&aud, 1));
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(
            header.kid.as_deref(),
            keys.jwks()["keys"][0]["kid"].as_str()
        );
        let key = DecodingKey::from_ec_components(
            keys.jwks()["keys"][0]["x"].as_str().unwrap(),
            keys.jwks()["keys"][0]["y"].as_str().unwrap(),
        )
        .unwrap();
        let mut v = Validation::new(Algorithm::ES256);
        v.validate_exp = false;
        v.validate_aud = false;
        jsonwebtoken::decode::<Value>(&token, &key, &v).unwrap();
    }
}
