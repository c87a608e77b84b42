//! Datastore selection by URL, as k3s does it: `sqlite://PATH` or `postgres://...`.

use std::path::{Path, PathBuf};

use crate::error::{Result, StorageError};

/// How SQLite syncs commits. `Full` (the default) fsyncs every commit, as etcd does; `Normal`
/// survives a process crash but may lose the last commits on power loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Synchronous {
    Full,
    Normal,
}

/// A parsed datastore URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `sqlite://PATH[?synchronous=FULL|NORMAL]` (also `sqlite:PATH`).
    Sqlite {
        path: PathBuf,
        synchronous: Synchronous,
    },
    /// `postgres://` or `postgresql://`, passed to the driver as given.
    Postgres { url: String },
}

impl Endpoint {
    /// The default datastore: `<data-dir>/state.db`.
    pub fn default_for(data_dir: &Path) -> Self {
        Endpoint::Sqlite {
            path: data_dir.join("state.db"),
            synchronous: Synchronous::Full,
        }
    }

    pub fn parse(url: &str) -> Result<Self> {
        let bad = |why: &str| StorageError::InvalidEndpoint(format!("{}: {why}", redact(url)));
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Endpoint::Postgres {
                url: url.to_string(),
            });
        }
        let Some(rest) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        else {
            return Err(bad("expected sqlite://PATH or postgres://..."));
        };
        let (path, params) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        if path.is_empty() {
            return Err(bad("missing the database file path"));
        }
        let mut synchronous = Synchronous::Full;
        for param in params
            .into_iter()
            .flat_map(|q| q.split('&'))
            .filter(|p| !p.is_empty())
        {
            match param.split_once('=') {
                Some(("synchronous", v)) if v.eq_ignore_ascii_case("full") => {
                    synchronous = Synchronous::Full
                }
                Some(("synchronous", v)) if v.eq_ignore_ascii_case("normal") => {
                    synchronous = Synchronous::Normal
                }
                _ => {
                    return Err(bad(&format!(
                        "unsupported parameter {param:?} (known: synchronous=FULL|NORMAL)"
                    )));
                }
            }
        }
        Ok(Endpoint::Sqlite {
            path: PathBuf::from(path),
            synchronous,
        })
    }

    /// The URL with any password hidden, for logs and errors.
    pub fn redacted(&self) -> String {
        match self {
            Endpoint::Sqlite { path, .. } => format!("sqlite://{}", path.display()),
            Endpoint::Postgres { url } => redact(url),
        }
    }
}

fn redact(url: &str) -> String {
    // scheme://user:password@host -> scheme://user:***@host
    if let Some((scheme, rest)) = url.split_once("://")
        && let Some((userinfo, host)) = rest.split_once('@')
        && let Some((user, _)) = userinfo.split_once(':')
    {
        return format!("{scheme}://{user}:***@{host}");
    }
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_k3s_forms() {
        assert_eq!(
            Endpoint::parse("sqlite:///var/lib/kelp/state.db").unwrap(),
            Endpoint::Sqlite {
                path: "/var/lib/kelp/state.db".into(),
                synchronous: Synchronous::Full
            }
        );
        assert_eq!(
            Endpoint::parse("sqlite:data/state.db?synchronous=NORMAL").unwrap(),
            Endpoint::Sqlite {
                path: "data/state.db".into(),
                synchronous: Synchronous::Normal
            }
        );
        assert!(matches!(
            Endpoint::parse("postgres://u:p@h:5432/db").unwrap(),
            Endpoint::Postgres { .. }
        ));
        assert!(matches!(
            Endpoint::parse("postgresql://h/db").unwrap(),
            Endpoint::Postgres { .. }
        ));
    }

    #[test]
    fn refuses_unknown_schemes_and_parameters_without_leaking_passwords() {
        let e = Endpoint::parse("mysql://root:secret@h/db")
            .unwrap_err()
            .to_string();
        assert!(e.contains("root:***@h"), "{e}");
        assert!(!e.contains("secret"));
        assert!(Endpoint::parse("sqlite://").is_err());
        assert!(Endpoint::parse("sqlite://x.db?journal=off").is_err());
    }
}
