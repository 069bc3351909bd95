//! AWS credentials, from where the AWS tools look: the environment (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), else the shared credentials file
//! (`AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`), profile `AWS_PROFILE` or
//! `default`. The secret key is zeroized and never printed.

use std::path::PathBuf;

use zeroize::Zeroizing;

/// Largest credentials file read.
const MAX_FILE: u64 = 64 * 1024;

/// A set of AWS credentials.
#[derive(Clone)]
pub struct Credentials {
    access_key_id: String,
    secret_access_key: Zeroizing<String>,
    session_token: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// Why no credentials could be had.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// None anywhere.
    #[error(
        "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or write them in \
         {file} (profile {profile})"
    )]
    Missing {
        /// The file looked in.
        file: String,
        /// The profile looked for.
        profile: String,
    },
    /// The credentials file cannot be read or is not what it should be.
    #[error("{file}: {why}")]
    BadFile {
        /// The file.
        file: String,
        /// Why.
        why: String,
    },
}

impl Credentials {
    /// Credentials given directly.
    pub fn new(access_key_id: &str, secret_access_key: &str, session_token: Option<&str>) -> Self {
        Self {
            access_key_id: access_key_id.to_string(),
            secret_access_key: Zeroizing::new(secret_access_key.to_string()),
            session_token: session_token.map(|t| Zeroizing::new(t.to_string())),
        }
    }

    /// The access key id (not a secret).
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    /// The secret key: for lending to an enclave (`super::enclave`), never for printing.
    pub(crate) fn secret_access_key(&self) -> &str {
        &self.secret_access_key
    }

    /// The session token, if any.
    pub(crate) fn session_token(&self) -> Option<&str> {
        self.session_token.as_deref().map(String::as_str)
    }

    /// For the signer.
    pub(crate) fn identity(&self) -> aws_smithy_runtime_api::client::identity::Identity {
        aws_credential_types::Credentials::new(
            self.access_key_id.clone(),
            self.secret_access_key.to_string(),
            self.session_token.as_ref().map(|t| t.to_string()),
            None,
            "keyserver",
        )
        .into()
    }

    /// From the environment, else the shared credentials file.
    pub fn from_environment() -> Result<Self, CredentialsError> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        if let (Some(id), Some(secret)) = (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
            return Ok(Self::new(&id, &secret, var("AWS_SESSION_TOKEN").as_deref()));
        }
        let file = var("AWS_SHARED_CREDENTIALS_FILE")
            .map(PathBuf::from)
            .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".aws/credentials")));
        let profile = var("AWS_PROFILE").unwrap_or_else(|| "default".into());
        let missing = |file: &Option<PathBuf>| CredentialsError::Missing {
            file: file
                .as_ref()
                .map_or_else(|| "~/.aws/credentials".into(), |f| f.display().to_string()),
            profile: profile.clone(),
        };
        let Some(path) = file.clone() else {
            return Err(missing(&file));
        };
        let text = match crate::files::read_bounded(&path, MAX_FILE) {
            Ok(b) => {
                Zeroizing::new(String::from_utf8(b).map_err(|_| CredentialsError::BadFile {
                    file: path.display().to_string(),
                    why: "not UTF-8".into(),
                })?)
            }
            Err(crate::files::FileError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                return Err(missing(&file));
            }
            Err(e) => {
                return Err(CredentialsError::BadFile {
                    file: path.display().to_string(),
                    why: e.to_string(),
                });
            }
        };
        Self::from_ini(&text, &profile).ok_or_else(|| missing(&file))
    }

    /// The profile `profile` of a credentials file (INI: `[profile]`, then `key = value`
    /// lines; `#` and `;` start comments).
    fn from_ini(text: &str, profile: &str) -> Option<Self> {
        let mut in_profile = false;
        let (mut id, mut secret, mut token) = (None, None, None);
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                in_profile = name.trim() == profile;
                continue;
            }
            if !in_profile {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let v = v.trim().to_string();
            match k.trim() {
                "aws_access_key_id" => id = Some(v),
                "aws_secret_access_key" => secret = Some(Zeroizing::new(v)),
                "aws_session_token" => token = Some(Zeroizing::new(v)),
                _ => {}
            }
        }
        Some(Self {
            access_key_id: id?,
            secret_access_key: secret?,
            session_token: token,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_is_read_from_a_credentials_file_and_the_secret_never_printed() {
        let text = "\
# comment
[default]
aws_access_key_id = AKIADEFAULT
aws_secret_access_key = secret-default

[ops]
aws_access_key_id=AKIAOPS
aws_secret_access_key=secret-ops
aws_session_token = token-ops
";
        let d = Credentials::from_ini(text, "default").unwrap();
        assert_eq!(d.access_key_id(), "AKIADEFAULT");
        assert!(d.session_token.is_none());
        let o = Credentials::from_ini(text, "ops").unwrap();
        assert_eq!(o.secret_access_key.as_str(), "secret-ops");
        assert!(!format!("{o:?}").contains("secret-ops"));
        assert!(Credentials::from_ini(text, "missing").is_none());
        assert!(Credentials::from_ini("[default]\naws_access_key_id = A\n", "default").is_none());
    }
}
