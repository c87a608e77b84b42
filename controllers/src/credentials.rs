//! Each controller acts as its own service account (upstream's
//! `--use-service-account-credentials`): the controller-manager, as
//! `system:kube-controller-manager`, makes `kube-system/<controller>` and asks TokenRequest for
//! its tokens, which it renews before they expire; RBAC's `system:controller:*` roles then
//! decide what each controller may do.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::config::AuthInfo;

/// How long a controller's token lives; it is renewed at 80% of that.
const TOKEN_SECONDS: i64 = 3600;

pub struct Credentials {
    root: kube::Client,
    config: kube::Config,
    dir: tempfile::TempDir,
    renewals: tokio::task::JoinSet<()>,
}

impl Credentials {
    pub fn new(root: kube::Client, config: kube::Config) -> anyhow::Result<Credentials> {
        Ok(Credentials {
            root,
            config,
            dir: tempfile::Builder::new().prefix("kelp-tokens").tempdir()?,
            renewals: tokio::task::JoinSet::new(),
        })
    }

    /// The controller-manager's own client (shared informers, leader election).
    pub fn root(&self) -> kube::Client {
        self.root.clone()
    }

    /// A client acting as the controller's service account.
    pub async fn client(&mut self, controller: &str) -> anyhow::Result<kube::Client> {
        let sas: Api<ServiceAccount> = Api::namespaced(self.root.clone(), "kube-system");
        if sas.get_opt(controller).await?.is_none() {
            let sa = ServiceAccount {
                metadata: ObjectMeta {
                    name: Some(controller.into()),
                    namespace: Some("kube-system".into()),
                    ..Default::default()
                },
                ..Default::default()
            };
            match sas.create(&PostParams::default(), &sa).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
        let path = self.dir.path().join(format!("{controller}.token"));
        write_token(&sas, controller, &path).await?;
        let (sas, name, file) = (sas.clone(), controller.to_string(), path.clone());
        self.renewals.spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(TOKEN_SECONDS as u64 * 4 / 5)).await;
                while let Err(e) = write_token(&sas, &name, &file).await {
                    tracing::warn!(controller = %name, error = %e, "cannot renew the token");
                    tokio::time::sleep(Duration::from_secs(10)).await;
                }
            }
        });
        let mut config = self.config.clone();
        config.auth_info = AuthInfo {
            token_file: Some(path.display().to_string()),
            ..Default::default()
        };
        Ok(kube::Client::try_from(config)?)
    }
}

/// Asks for a token and writes it where the client reads it (replaced whole, so a reader
/// never sees half a token). A service account just made may take a moment to be seen.
async fn write_token(sas: &Api<ServiceAccount>, name: &str, path: &PathBuf) -> anyhow::Result<()> {
    let request = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(TOKEN_SECONDS),
            ..Default::default()
        },
        ..Default::default()
    };
    let mut attempt = 0;
    let token = loop {
        match sas
            .create_subresource::<_, TokenRequest>("token", name, &PostParams::default(), &request)
            .await
        {
            Ok(t) => break t.status.map(|s| s.token).unwrap_or_default(),
            Err(kube::Error::Api(s)) if s.code == 404 && attempt < 50 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    let partial = path.with_extension("new");
    std::fs::write(&partial, token)?;
    std::fs::rename(&partial, path)?;
    Ok(())
}
