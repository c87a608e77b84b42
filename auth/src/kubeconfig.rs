//! kubeconfig files, as kubectl and client-go read them.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::Credentials;

/// A kubeconfig with one cluster (`kelp`), one user and one context, credentials inline.
pub fn kubeconfig(server: &str, ca_pem: &str, user: &str, creds: &Credentials) -> String {
    let b64 = |s: &str| STANDARD.encode(s.as_bytes());
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: kelp
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: {user}
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
contexts:
- name: kelp
  context:
    cluster: kelp
    user: {user}
current-context: kelp
preferences: {{}}
",
        ca = b64(ca_pem),
        cert = b64(&creds.cert_pem),
        key = b64(&creds.key_pem),
    )
}
