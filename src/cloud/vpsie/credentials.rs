//! Credentials, read from the `kube-system/vpsie-secret` string map (or flags), and kept
//! out of every log line, error and debug print.

use std::collections::BTreeMap;
use std::fmt;

use crate::cloud::CloudError;

/// A secret string. No `Display`, a redacting `Debug`, and the only way out is
/// [`Secret::expose`], so leaking one takes a visible call.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// How the client authenticates.
#[derive(Clone, Debug)]
pub enum Auth {
    /// A long-lived access token sent as `Vpsie-Auth`; never refreshed.
    Token(Secret),
    /// Exchanged at `/apps/v2/auth/from/api` for a short-lived token.
    ClientCredentials { client_id: Secret, client_secret: Secret },
}

/// Everything the secret may carry. Only `auth` is required.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub auth: Auth,
    /// API base URL override (`url` key).
    pub url: Option<String>,
    /// The managed cluster's identifier (`resourceIdentifier` key).
    pub resource_identifier: Option<String>,
    pub datacenter_id: Option<String>,
    pub project_id: Option<String>,
}

impl Credentials {
    pub fn token(token: impl Into<String>) -> Self {
        Self::from_auth(Auth::Token(Secret::new(token)))
    }

    pub fn client_credentials(id: impl Into<String>, secret: impl Into<String>) -> Self {
        Self::from_auth(Auth::ClientCredentials { client_id: Secret::new(id), client_secret: Secret::new(secret) })
    }

    fn from_auth(auth: Auth) -> Self {
        Self { auth, url: None, resource_identifier: None, datacenter_id: None, project_id: None }
    }

    /// Reads the Secret's decoded string data. `token` (or `apiKey`) wins over
    /// `clientId` + `clientSecret`. The error names missing keys, never values.
    pub fn from_secret_map(data: &BTreeMap<String, String>) -> Result<Self, CloudError> {
        let get = |k: &str| data.get(k).map(|v| v.trim()).filter(|v| !v.is_empty()).map(str::to_string);
        let auth = if let Some(t) = get("token").or_else(|| get("apiKey")) {
            Auth::Token(Secret::new(t))
        } else if let (Some(id), Some(secret)) = (get("clientId"), get("clientSecret")) {
            Auth::ClientCredentials { client_id: Secret::new(id), client_secret: Secret::new(secret) }
        } else {
            return Err(CloudError::Unauthorized {
                message: "secret has neither `token`/`apiKey` nor `clientId`+`clientSecret`".into(),
            });
        };
        Ok(Self {
            auth,
            url: get("url"),
            resource_identifier: get("resourceIdentifier"),
            datacenter_id: get("datacenterId"),
            project_id: get("projectId"),
        })
    }

    /// Every secret value, so the client can scrub them from anything it reports.
    pub(crate) fn secret_values(&self) -> Vec<String> {
        match &self.auth {
            Auth::Token(t) => vec![t.expose().to_string()],
            Auth::ClientCredentials { client_id, client_secret } => {
                vec![client_id.expose().to_string(), client_secret.expose().to_string()]
            }
        }
    }
}

/// Replaces any known secret inside `text` (defence in depth: a server could echo one).
pub(crate) fn scrub(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), "[redacted]");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn a_token_wins_over_client_credentials() {
        let c = Credentials::from_secret_map(&map(&[
            ("token", "tok-123456"),
            ("clientId", "id"),
            ("clientSecret", "sec"),
            ("resourceIdentifier", "cluster-uuid"),
        ]));
        assert!(matches!(c, Ok(Credentials { auth: Auth::Token(_), .. })));
    }

    #[test]
    fn api_key_is_accepted_like_a_token() {
        let c = Credentials::from_secret_map(&map(&[("apiKey", "k-123456")]));
        assert!(matches!(c, Ok(Credentials { auth: Auth::Token(_), .. })));
    }

    #[test]
    fn client_credentials_need_both_halves() {
        let c = Credentials::from_secret_map(&map(&[("clientId", "id-only")]));
        assert!(matches!(c, Err(CloudError::Unauthorized { .. })));
        let c = Credentials::from_secret_map(&map(&[
            ("clientId", "the-id"),
            ("clientSecret", "the-secret"),
            ("url", "https://api2.vpsie.com"),
        ]));
        assert!(matches!(c, Ok(Credentials { auth: Auth::ClientCredentials { .. }, .. })));
    }

    #[test]
    fn debug_output_never_shows_secret_values() {
        let c = Credentials::client_credentials("id-AAAA1111", "secret-BBBB2222");
        let dbg = format!("{c:?} {:?}", Credentials::token("tok-CCCC3333"));
        for s in ["id-AAAA1111", "secret-BBBB2222", "tok-CCCC3333"] {
            assert!(!dbg.contains(s), "{dbg}");
        }
    }

    #[test]
    fn scrub_replaces_known_secrets() {
        let s = scrub("bad token tok-XYZ123 here", &["tok-XYZ123".into()]);
        assert_eq!(s, "bad token [redacted] here");
    }
}
