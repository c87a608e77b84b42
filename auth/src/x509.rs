//! Client certificates as users: the subject's common name is the user, its organizations
//! the groups (upstream's `CommonNameUserConversion`). The chain and validity are checked by
//! the TLS layer's verifier; this reads who the certificate names.

use crate::user::UserInfo;

pub fn user_from_certificate(der: &[u8]) -> Result<UserInfo, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("cannot parse the client certificate: {e}"))?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or("")
        .to_string();
    if name.is_empty() {
        return Err("common name of user cert is empty".to_string());
    }
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .map(str::to_string)
        .collect();
    Ok(UserInfo {
        name,
        groups,
        ..UserInfo::default()
    })
}

/// The organizations (O) of a PEM certificate request's subject, every one of them.
pub fn request_organizations(pem: &[u8]) -> Result<Vec<String>, String> {
    use x509_parser::prelude::FromDer;
    let (_, block) = x509_parser::pem::parse_x509_pem(pem).map_err(|e| format!("not PEM: {e}"))?;
    if block.label != "CERTIFICATE REQUEST" {
        return Err(format!(
            "PEM block type must be CERTIFICATE REQUEST, not {}",
            block.label
        ));
    }
    let (_, request) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&block.contents)
            .map_err(|e| format!("not a certificate request: {e}"))?;
    Ok(request
        .certification_request_info
        .subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_common_name_is_the_user_and_organizations_are_groups() {
        let dir = tempfile::tempdir().unwrap();
        let pki = crate::Pki::load_or_create(dir.path()).unwrap();
        let creds = pki.client("alice", &["dev", "ops"]).unwrap();
        let der = x509_parser::pem::parse_x509_pem(creds.cert_pem.as_bytes())
            .unwrap()
            .1
            .contents;
        let user = user_from_certificate(&der).unwrap();
        assert_eq!(user.name, "alice");
        assert_eq!(user.groups, vec!["dev", "ops"]);
        assert!(user_from_certificate(b"not a certificate").is_err());
    }
}
