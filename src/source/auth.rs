//! Credentials read from files and refreshed when the file changes.
//!
//! Kubernetes rotates projected service-account tokens and mounted secrets in place (an atomic
//! symlink swap), so a token read once at start-up expires under a long-running daemon. We check
//! the file's modification time and size before each query (a cheap `stat`) and re-read only when
//! they change.

use super::config::PrometheusConfig;
use super::SourceError;
use reqwest::header::HeaderValue;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

/// The `Authorization` header source for one configured credential.
#[derive(Debug)]
pub struct Credentials {
    kind: Kind,
    file: PathBuf,
    cache: Mutex<Option<Cached>>,
}

#[derive(Debug)]
enum Kind {
    Bearer,
    Basic { username: String },
}

#[derive(Debug, Clone)]
struct Cached {
    stamp: (Option<SystemTime>, u64),
    header: HeaderValue,
}

impl Credentials {
    /// The credential `cfg` configures, if any (`bearer_token_file`, or `basic_auth_user` with
    /// `basic_auth_password_file`; [`PrometheusConfig::issues`] rejects both or half of one).
    pub fn from_config(cfg: &PrometheusConfig) -> Option<Self> {
        match (
            &cfg.bearer_token_file,
            &cfg.basic_auth_user,
            &cfg.basic_auth_password_file,
        ) {
            (Some(token_file), _, _) => Some(Self::bearer(token_file.clone())),
            (None, Some(username), Some(password_file)) => {
                Some(Self::basic(username.clone(), password_file.clone()))
            }
            _ => None,
        }
    }

    /// `Authorization: Bearer <contents of token_file>`.
    pub fn bearer(token_file: PathBuf) -> Self {
        Self::with(Kind::Bearer, token_file)
    }

    /// HTTP basic auth, the password read from `password_file`.
    pub fn basic(username: String, password_file: PathBuf) -> Self {
        Self::with(Kind::Basic { username }, password_file)
    }

    fn with(kind: Kind, file: PathBuf) -> Self {
        Self {
            kind,
            file,
            cache: Mutex::new(None),
        }
    }

    /// The current header value, re-reading the file if it changed since the last call.
    pub async fn header(&self) -> Result<HeaderValue, SourceError> {
        let meta = tokio::fs::metadata(&self.file)
            .await
            .map_err(|e| self.unreadable(&e))?;
        let stamp = (meta.modified().ok(), meta.len());
        if let Ok(guard) = self.cache.lock() {
            if let Some(c) = guard.as_ref().filter(|c| c.stamp == stamp) {
                return Ok(c.header.clone());
            }
        }
        let secret = tokio::fs::read_to_string(&self.file)
            .await
            .map_err(|e| self.unreadable(&e))?;
        let header = self.render(secret.trim())?;
        if let Ok(mut guard) = self.cache.lock() {
            *guard = Some(Cached {
                stamp,
                header: header.clone(),
            });
        }
        Ok(header)
    }

    fn render(&self, secret: &str) -> Result<HeaderValue, SourceError> {
        let text = match &self.kind {
            Kind::Bearer => {
                if secret.is_empty() {
                    return Err(self.invalid("is empty; it must contain the bearer token"));
                }
                format!("Bearer {secret}")
            }
            Kind::Basic { username } => {
                format!(
                    "Basic {}",
                    base64(format!("{username}:{secret}").as_bytes())
                )
            }
        };
        let mut value = HeaderValue::from_str(&text)
            .map_err(|_| self.invalid("contains characters not allowed in an HTTP header"))?;
        value.set_sensitive(true);
        Ok(value)
    }

    fn what(&self) -> &'static str {
        match self.kind {
            Kind::Bearer => "prometheus.bearer_token_file",
            Kind::Basic { .. } => "prometheus.basic_auth_password_file",
        }
    }

    fn unreadable(&self, e: &std::io::Error) -> SourceError {
        SourceError::Auth {
            detail: format!(
                "cannot read {} {}: {e}; check the path and that the secret is mounted",
                self.what(),
                display(&self.file)
            ),
        }
    }

    fn invalid(&self, why: &str) -> SourceError {
        SourceError::Auth {
            detail: format!("{} {} {why}", self.what(), display(&self.file)),
        }
    }
}

fn display(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

/// Standard base64 with padding (RFC 4648), for basic auth. Small enough not to warrant a crate.
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 0x3f) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("Aladdin:open sesame", "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[tokio::test]
    async fn bearer_token_is_reread_when_the_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "first\n").unwrap();
        let creds = Credentials::bearer(file.clone());
        assert_eq!(creds.header().await.unwrap(), "Bearer first");
        // Rotation the way the kubelet does it: a new file swapped in place.
        let tmp = dir.path().join("token.new");
        std::fs::write(&tmp, "second-token").unwrap();
        std::fs::rename(&tmp, &file).unwrap();
        assert_eq!(creds.header().await.unwrap(), "Bearer second-token");
    }

    #[tokio::test]
    async fn basic_auth_reads_the_password_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "open sesame").unwrap();
        let creds = Credentials::basic("Aladdin".into(), file);
        assert_eq!(
            creds.header().await.unwrap(),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
    }

    #[tokio::test]
    async fn missing_file_names_the_key_and_the_path() {
        let creds = Credentials::bearer("/nonexistent/token".into());
        let err = creds.header().await.unwrap_err();
        assert_eq!(err.reason(), "auth");
        let msg = err.to_string();
        assert!(msg.contains("prometheus.bearer_token_file"), "{msg}");
        assert!(msg.contains("/nonexistent/token"), "{msg}");
    }
}
