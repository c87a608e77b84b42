//! The certificate controllers: csrapproving approves kubelet client certificate requests
//! from bootstrap tokens (`system:bootstrappers`) when a SubjectAccessReview lets the requestor
//! create `certificatesigningrequests/nodeclient`; csrsigning signs approved requests for the
//! built-in signers (kube-apiserver-client, kube-apiserver-client-kubelet, kubelet-serving)
//! with the cluster CA, after upstream's checks of each signer's subject and usages, for
//! `expirationSeconds` (at least 10 minutes) or the default year.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use k8s_openapi::ByteString;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use rcgen::{
    CertificateSigningRequestParams, DnType, DnValue, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose,
};

use crate::Informers;
use crate::util::{Error, drive, is_status};

pub const CLIENT: &str = "kubernetes.io/kube-apiserver-client";
pub const KUBELET_CLIENT: &str = "kubernetes.io/kube-apiserver-client-kubelet";
pub const KUBELET_SERVING: &str = "kubernetes.io/kubelet-serving";
/// Upstream's --cluster-signing-duration default.
const DEFAULT_DURATION: i64 = 365 * 24 * 3600;

/// The CA the signer signs with (PEM).
#[derive(Clone)]
pub struct SigningCa {
    pub cert_pem: String,
    pub key_pem: String,
}

struct Ctx {
    approver: kube::Client,
    signer: kube::Client,
    issuer: Issuer<'static, KeyPair>,
}

pub async fn run(
    approver: kube::Client,
    signer: kube::Client,
    informers: Arc<Informers>,
    ca: SigningCa,
) -> anyhow::Result<()> {
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, KeyPair::from_pem(&ca.key_pem)?)?;
    let controller = Controller::for_stream(informers.csrs.changes(), informers.csrs.store());
    drive(
        "certificates",
        controller,
        reconcile,
        Arc::new(Ctx {
            approver,
            signer,
            issuer,
        }),
    )
    .await
}

fn has(csr: &CertificateSigningRequest, kind: &str) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == kind && c.status == "True"))
}

fn condition(kind: &str, reason: &str, message: &str) -> CertificateSigningRequestCondition {
    let now = Time(jiff::Timestamp::now());
    CertificateSigningRequestCondition {
        type_: kind.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_update_time: Some(now.clone()),
        last_transition_time: Some(now),
    }
}

fn text(v: &DnValue) -> String {
    match v {
        DnValue::Utf8String(s) => s.clone(),
        DnValue::PrintableString(s) => s.as_str().to_string(),
        DnValue::Ia5String(s) => s.as_str().to_string(),
        other => format!("{other:?}"),
    }
}

fn parse(csr: &CertificateSigningRequest) -> Result<CertificateSigningRequestParams, String> {
    let spec = csr.spec.clone();
    let pem =
        String::from_utf8(spec.request.0).map_err(|_| "the request is not PEM".to_string())?;
    CertificateSigningRequestParams::from_pem(&pem).map_err(|e| format!("invalid request: {e}"))
}

/// The subject's common name and organization.
fn subject(req: &CertificateSigningRequestParams) -> (String, String) {
    let dn = &req.params.distinguished_name;
    (
        dn.get(&DnType::CommonName).map(text).unwrap_or_default(),
        dn.get(&DnType::OrganizationName)
            .map(text)
            .unwrap_or_default(),
    )
}

/// Upstream's per-signer checks (pkg/apis/certificates/helpers, the signer's IsKubelet*).
fn check(
    signer: &str,
    req: &CertificateSigningRequestParams,
    usages: &[String],
) -> Result<(), String> {
    let (cn, org) = subject(req);
    let allowed: &[&str] = match signer {
        CLIENT => &["client auth", "digital signature", "key encipherment"],
        KUBELET_CLIENT => &["client auth", "digital signature", "key encipherment"],
        KUBELET_SERVING => &["server auth", "digital signature", "key encipherment"],
        _ => return Err(format!("unknown signer {signer}")),
    };
    if let Some(u) = usages.iter().find(|u| !allowed.contains(&u.as_str())) {
        return Err(format!("invalid usage for {signer}: {u}"));
    }
    match signer {
        CLIENT if !usages.iter().any(|u| u == "client auth") => {
            Err("client auth usage required".into())
        }
        KUBELET_CLIENT | KUBELET_SERVING => {
            if org != "system:nodes" {
                Err("subject organization is not system:nodes".into())
            } else if !cn.starts_with("system:node:") {
                Err("subject common name does not begin with system:node:".into())
            } else {
                Ok(())
            }
        }
        _ => Ok(()),
    }
}

async fn write_status(
    client: &kube::Client,
    csr: &CertificateSigningRequest,
    approval: bool,
) -> Result<(), Error> {
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let result = if approval {
        api.replace_subresource("approval", &csr.name_any(), &PostParams::default(), csr)
            .await
    } else {
        api.replace_status(&csr.name_any(), &PostParams::default(), csr)
            .await
    };
    match result {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, 409) || is_status(&e, 404) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn reconcile(csr: Arc<CertificateSigningRequest>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let signer = csr.spec.signer_name.clone();
    let usages = csr.spec.usages.clone().unwrap_or_default();
    let issued = csr
        .status
        .as_ref()
        .and_then(|s| s.certificate.as_ref())
        .is_some();
    if issued || has(&csr, "Denied") || has(&csr, "Failed") {
        return Ok(Action::await_change());
    }
    if !has(&csr, "Approved") {
        // csrapproving: kubelets joining with a bootstrap token.
        let groups = csr.spec.groups.clone().unwrap_or_default();
        if signer == KUBELET_CLIENT
            && groups.iter().any(|g| g == "system:bootstrappers")
            && parse(&csr).is_ok_and(|r| check(&signer, &r, &usages).is_ok())
            && allowed_nodeclient(&ctx.approver, &csr).await?
        {
            let mut approved = (*csr).clone();
            approved
                .status
                .get_or_insert_default()
                .conditions
                .get_or_insert_default()
                .push(condition(
                    "Approved",
                    "AutoApproved",
                    "Auto approving kubelet client certificate after SubjectAccessReview.",
                ));
            write_status(&ctx.approver, &approved, true).await?;
        }
        return Ok(Action::await_change());
    }
    if ![CLIENT, KUBELET_CLIENT, KUBELET_SERVING].contains(&signer.as_str()) {
        return Ok(Action::await_change()); // another signer's
    }
    let mut updated = (*csr).clone();
    let outcome = parse(&csr).and_then(|req| check(&signer, &req, &usages).map(|_| req));
    match outcome {
        Err(message) => {
            updated
                .status
                .get_or_insert_default()
                .conditions
                .get_or_insert_default()
                .push(condition("Failed", "SignerValidationFailure", &message));
        }
        Ok(mut req) => {
            let seconds = csr
                .spec
                .expiration_seconds
                .map(|s| i64::from(s).max(600))
                .unwrap_or(DEFAULT_DURATION)
                .min(DEFAULT_DURATION);
            let now = std::time::SystemTime::now();
            let p = &mut req.params;
            // Backdated five minutes for clock skew, as upstream's signer does.
            p.not_before = (now - Duration::from_secs(300)).into();
            p.not_after = (now + Duration::from_secs(seconds as u64)).into();
            p.is_ca = IsCa::ExplicitNoCa;
            p.subject_alt_names.retain(|_| signer == KUBELET_SERVING);
            p.key_usages = usages
                .iter()
                .filter_map(|u| match u.as_str() {
                    "digital signature" => Some(KeyUsagePurpose::DigitalSignature),
                    "key encipherment" => Some(KeyUsagePurpose::KeyEncipherment),
                    _ => None,
                })
                .collect();
            p.extended_key_usages = usages
                .iter()
                .filter_map(|u| match u.as_str() {
                    "client auth" => Some(ExtendedKeyUsagePurpose::ClientAuth),
                    "server auth" => Some(ExtendedKeyUsagePurpose::ServerAuth),
                    _ => None,
                })
                .collect();
            let cert = req
                .signed_by(&ctx.issuer)
                .map_err(|e| anyhow::anyhow!("signing {}: {e}", csr.name_any()))?;
            updated.status.get_or_insert_default().certificate =
                Some(ByteString(cert.pem().into_bytes()));
        }
    }
    write_status(&ctx.signer, &updated, false).await?;
    Ok(Action::await_change())
}

/// Whether the requestor may ask for a node client certificate (upstream's SAR check).
async fn allowed_nodeclient(
    client: &kube::Client,
    csr: &CertificateSigningRequest,
) -> Result<bool, Error> {
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: csr.spec.username.clone(),
            groups: csr.spec.groups.clone(),
            uid: csr.spec.uid.clone(),
            resource_attributes: Some(ResourceAttributes {
                group: Some("certificates.k8s.io".into()),
                resource: Some("certificatesigningrequests".into()),
                subresource: Some("nodeclient".into()),
                verb: Some("create".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = api.create(&PostParams::default(), &review).await?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

/// The base64 of a PEM (what `spec.request` carries in JSON).
pub fn encode(pem: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(pem)
}
