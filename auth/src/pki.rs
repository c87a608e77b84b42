//! The cluster CA, kept in `<data-dir>/pki/`, and the certificates it signs.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key: {0}")]
    Key(String),
    #[error("certificate: {0}")]
    Certificate(#[from] rcgen::Error),
}

/// A certificate and its private key, PEM-encoded.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The cluster's certificate authority.
pub struct Pki {
    dir: PathBuf,
    ca: Credentials,
    issuer: Issuer<'static, KeyPair>,
}

fn read(path: &Path) -> Result<Option<String>, PkiError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PkiError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Writes a file readable by its owner only (keys and kubeconfigs hold secrets).
pub(crate) fn write_private(path: &Path, contents: &str) -> Result<(), PkiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(contents.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

impl Pki {
    /// Loads the CA from `<data_dir>/pki`, creating it on first start.
    pub fn load_or_create(data_dir: &Path) -> Result<Pki, PkiError> {
        Pki::open(data_dir.join("pki"), "kelp-ca")
    }

    /// The front-proxy CA, kept in `pki/front-proxy/`: it signs the client certificate the
    /// aggregation layer presents to extension API servers, which trust request headers
    /// (`X-Remote-User`, ...) only from certificates it signed. A CA apart from the cluster
    /// CA, as upstream's, so that no cluster client certificate can pass for the proxy.
    pub fn front_proxy(&self) -> Result<Pki, PkiError> {
        Pki::open(self.dir.join("front-proxy"), "kelp-front-proxy-ca")
    }

    fn open(dir: PathBuf, common_name: &str) -> Result<Pki, PkiError> {
        std::fs::create_dir_all(&dir).map_err(|source| PkiError::Io {
            path: dir.clone(),
            source,
        })?;
        let (cert_path, key_path) = (dir.join("ca.crt"), dir.join("ca.key"));
        let ca = match (read(&cert_path)?, read(&key_path)?) {
            (Some(cert_pem), Some(key_pem)) => Credentials { cert_pem, key_pem },
            _ => {
                let key = KeyPair::generate()?;
                let mut params = CertificateParams::new(Vec::<String>::new())?;
                params.distinguished_name = name(common_name, &[]);
                params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
                params.key_usages = vec![
                    KeyUsagePurpose::KeyCertSign,
                    KeyUsagePurpose::CrlSign,
                    KeyUsagePurpose::DigitalSignature,
                ];
                params.not_after = rcgen::date_time_ymd(2036, 1, 1);
                let cert = params.self_signed(&key)?;
                let ca = Credentials {
                    cert_pem: cert.pem(),
                    key_pem: key.serialize_pem(),
                };
                write_private(&key_path, &ca.key_pem)?;
                write_private(&cert_path, &ca.cert_pem)?;
                ca
            }
        };
        let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, KeyPair::from_pem(&ca.key_pem)?)?;
        Ok(Pki { dir, ca, issuer })
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca.cert_pem
    }

    /// The API server's certificate for these DNS names and addresses. Kept in
    /// `pki/serving.{crt,key}` and reused while the names it was issued for stay the same.
    pub fn serving(&self, dns: &[String], ips: &[IpAddr]) -> Result<Credentials, PkiError> {
        let mut sans: Vec<String> = dns.to_vec();
        sans.extend(ips.iter().map(IpAddr::to_string));
        sans.sort();
        sans.dedup();
        let record = sans.join("\n");
        let (cert_path, key_path, sans_path) = (
            self.dir.join("serving.crt"),
            self.dir.join("serving.key"),
            self.dir.join("serving.sans"),
        );
        if let (Some(cert_pem), Some(key_pem), Some(old)) =
            (read(&cert_path)?, read(&key_path)?, read(&sans_path)?)
            && old == record
        {
            return Ok(Credentials { cert_pem, key_pem });
        }
        let mut params = CertificateParams::new(sans)?;
        params.distinguished_name = name("kube-apiserver", &[]);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let creds = self.sign(params)?;
        write_private(&key_path, &creds.key_pem)?;
        write_private(&cert_path, &creds.cert_pem)?;
        write_private(&sans_path, &record)?;
        Ok(creds)
    }

    /// A client certificate for `user` in `groups` (CN and O, as Kubernetes reads them).
    pub fn client(&self, user: &str, groups: &[&str]) -> Result<Credentials, PkiError> {
        self.client_valid(user, groups, (2025, 1, 1), (2036, 1, 1))
    }

    /// A client certificate valid between two dates (year, month, day). Written with
    /// x509-cert rather than rcgen, whose names hold one value per attribute type: a user in
    /// several groups needs one O attribute per group.
    pub fn client_valid(
        &self,
        user: &str,
        groups: &[&str],
        from: (i32, u8, u8),
        until: (i32, u8, u8),
    ) -> Result<Credentials, PkiError> {
        use p256::pkcs8::DecodePrivateKey;
        use x509_cert::builder::{Builder, CertificateBuilder, Profile};
        use x509_cert::der::asn1::{SetOfVec, UtcTime, Utf8StringRef};
        use x509_cert::der::{Any, DateTime, Decode, DecodePem, EncodePem, pem::LineEnding};
        use x509_cert::ext::pkix::ExtendedKeyUsage;
        use x509_cert::name::{RdnSequence, RelativeDistinguishedName};
        use x509_cert::time::{Time, Validity};

        let bad = |e: &dyn std::fmt::Display| PkiError::Key(e.to_string());
        let attribute = |oid, value: &str| -> Result<RelativeDistinguishedName, PkiError> {
            let value = Any::from(Utf8StringRef::new(value).map_err(|e| bad(&e))?);
            let atv = x509_cert::attr::AttributeTypeAndValue { oid, value };
            Ok(RelativeDistinguishedName(
                SetOfVec::try_from(vec![atv]).map_err(|e| bad(&e))?,
            ))
        };
        let mut rdns = Vec::new();
        for g in groups {
            rdns.push(attribute(const_oid::db::rfc4519::O, g)?);
        }
        rdns.push(attribute(const_oid::db::rfc4519::CN, user)?);
        let time = |(y, m, d): (i32, u8, u8)| -> Result<Time, PkiError> {
            let at = DateTime::new(y as u16, m, d, 0, 0, 0).map_err(|e| bad(&e))?;
            Ok(Time::UtcTime(
                UtcTime::from_date_time(at).map_err(|e| bad(&e))?,
            ))
        };
        let validity = Validity {
            not_before: time(from)?,
            not_after: time(until)?,
        };
        let key = KeyPair::generate()?;
        let spki = x509_cert::spki::SubjectPublicKeyInfoOwned::from_der(
            &rcgen::PublicKeyData::subject_public_key_info(&key),
        )
        .map_err(|e| bad(&e))?;
        let ca =
            x509_cert::Certificate::from_pem(self.ca.cert_pem.as_bytes()).map_err(|e| bad(&e))?;
        let signer =
            p256::ecdsa::SigningKey::from_pkcs8_pem(&self.ca.key_pem).map_err(|e| bad(&e))?;
        let mut serial = *uuid::Uuid::new_v4().as_bytes();
        serial[0] &= 0x7f;
        let profile = Profile::Leaf {
            issuer: ca.tbs_certificate.subject.clone(),
            enable_key_agreement: false,
            enable_key_encipherment: true,
        };
        let mut builder = CertificateBuilder::new(
            profile,
            x509_cert::serial_number::SerialNumber::new(&serial).map_err(|e| bad(&e))?,
            validity,
            RdnSequence(rdns),
            spki,
            &signer,
        )
        .map_err(|e| bad(&e))?;
        builder
            .add_extension(&ExtendedKeyUsage(vec![
                const_oid::db::rfc5280::ID_KP_CLIENT_AUTH,
            ]))
            .map_err(|e| bad(&e))?;
        let cert = builder
            .build::<p256::ecdsa::DerSignature>()
            .map_err(|e| bad(&e))?;
        Ok(Credentials {
            cert_pem: cert.to_pem(LineEnding::LF).map_err(|e| bad(&e))?,
            key_pem: key.serialize_pem(),
        })
    }

    fn sign(&self, mut params: CertificateParams) -> Result<Credentials, PkiError> {
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.not_before = rcgen::date_time_ymd(2025, 1, 1);
        params.not_after = rcgen::date_time_ymd(2036, 1, 1);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Credentials {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn name(common_name: &str, organizations: &[&str]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for o in organizations {
        dn.push(DnType::OrganizationName, *o);
    }
    dn.push(DnType::CommonName, common_name);
    dn
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_persists_and_the_serving_certificate_is_reused_while_its_names_stay() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(dir.path()).unwrap();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let first = pki.serving(&["localhost".into()], &[ip]).unwrap();
        let again = Pki::load_or_create(dir.path()).unwrap();
        assert_eq!(again.ca_pem(), pki.ca_pem());
        assert_eq!(
            again
                .serving(&["localhost".into()], &[ip])
                .unwrap()
                .cert_pem,
            first.cert_pem
        );
        let other = again
            .serving(&["localhost".into(), "kelp.example".into()], &[ip])
            .unwrap();
        assert_ne!(other.cert_pem, first.cert_pem);
        let mode = std::fs::metadata(dir.path().join("pki/ca.key"))
            .unwrap()
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
    }
}
