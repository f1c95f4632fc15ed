//! How the gateway talks to an identity provider: which URLs it may fetch keys from, the
//! HTTPS client it fetches them with, and what it says when a fetch fails.
//!
//! Whoever can answer the gateway's JWKS request decides which tokens the gateway accepts. So
//! the discovery document and the JWKS are fetched over HTTPS, with two exceptions: a loopback
//! address (nobody else is on that path: a provider on the same host, the test provider) and
//! an issuer with `allow_http = true` (the operator says the network path is trusted; `check`
//! warns about it). The rule covers every URL fetched: the configured ones (checked when the
//! configuration is loaded, so `check` and `serve` both refuse), the `jwks_uri` a discovery
//! document names, and the target of every redirect.
//!
//! A provider behind a private CA is trusted with the issuer's `ca_file`, added to the
//! system's roots for that issuer's client only.
//!
//! A failed fetch is reported with its whole cause chain (`std::error::Error::source`), so the
//! ledger and the client read "invalid peer certificate: UnknownIssuer" or "Connection
//! refused" rather than only "error sending request".

use std::error::Error as StdError;
use std::time::Duration;

use portcullis_core::config::OidcIssuerConfig;
use reqwest::Url;

use crate::IdentityError;

/// How long one request to an identity provider may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// The configured URLs the gateway fetches for an issuer, with the setting each comes from:
/// the JWKS when `jwks_uri` is set, else the discovery document (`discovery_url`, or derived
/// from `issuer`).
fn fetched_urls(config: &OidcIssuerConfig) -> Vec<(&'static str, String)> {
    match (&config.jwks_uri, &config.discovery_url) {
        (Some(jwks), _) => vec![("jwks_uri", jwks.clone())],
        (None, Some(discovery)) => vec![("discovery_url", discovery.clone())],
        (None, None) => vec![("issuer", config.issuer.clone())],
    }
}

/// Is `url`'s host a loopback address (`127.0.0.0/8`, `::1`, `localhost`)?
fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Why the gateway may not fetch `url` for this issuer, or `None` when it may.
fn refusal(url: &Url, allow_http: bool) -> Option<String> {
    match url.scheme() {
        "https" => None,
        "http" if allow_http || is_loopback(url) => None,
        "http" => Some(format!(
            "plain http to {}, which is not a loopback address: anyone on the network path \
             could replace the signing keys and mint tokens the gateway would accept",
            url.host_str().unwrap_or("?")
        )),
        other => Some(format!(
            "scheme {other:?} is not fetched; use an https:// URL"
        )),
    }
}

/// Checks the URLs an issuer's keys are fetched from. `Ok(warnings)` when they may be
/// fetched: one warning per plain-http URL off loopback that `allow_http = true` lets through.
/// The error names the issuer, the setting, and the two ways out.
pub fn check_transport(config: &OidcIssuerConfig) -> Result<Vec<String>, IdentityError> {
    let mut warnings = Vec::new();
    for (setting, text) in fetched_urls(config) {
        let what = format!("identity.oidc {:?}: {setting} = {text:?}", config.name);
        let url = Url::parse(&text).map_err(|e| IdentityError::Setup {
            what: what.clone(),
            reason: format!(
                "is not a URL ({e}); the gateway fetches the provider's keys from it: give \
                 the https:// URL of the provider (for issuer: exactly the `iss` of its tokens)"
            ),
        })?;
        if let Some(why) = refusal(&url, config.allow_http) {
            return Err(IdentityError::Setup {
                what,
                reason: format!(
                    "the provider's keys would be fetched over {why}. Use the provider's \
                     https:// URL (add ca_file = \"provider-ca.pem\" to this [[identity.oidc]] \
                     entry if its certificate is signed by a private CA), or, only if the \
                     network path to it is trusted, set allow_http = true on this entry"
                ),
            });
        }
        if url.scheme() == "http" && !is_loopback(&url) {
            warnings.push(format!(
                "identity.oidc {:?}: allow_http = true: the signing keys are fetched from \
                 {setting} = {text:?} over plain http; anyone on the network path to {} can \
                 replace them and mint tokens the gateway would accept. Use https:// (with \
                 ca_file for a private CA) where you can",
                config.name,
                url.host_str().unwrap_or("?")
            ));
        }
    }
    Ok(warnings)
}

/// The same rule for a URL learnt at run time (a discovery document's `jwks_uri`).
pub(crate) fn check_runtime_url(config: &OidcIssuerConfig, text: &str) -> Result<(), String> {
    let url = Url::parse(text).map_err(|e| format!("{text:?} is not a URL ({e})"))?;
    match refusal(&url, config.allow_http) {
        None => Ok(()),
        Some(why) => Err(format!(
            "refusing to fetch {text}: {why}; have the provider publish an https:// URL, or \
             set allow_http = true on identity.oidc {:?} if the network path is trusted",
            config.name
        )),
    }
}

/// The HTTP client for one issuer: a timeout, the issuer's `ca_file` added to the system's
/// roots, and redirects that never leave HTTPS for plain http off loopback (unless
/// `allow_http`). `ca_file` is read as given (the configuration loader makes it absolute).
pub fn http_client(config: &OidcIssuerConfig) -> Result<reqwest::Client, IdentityError> {
    let allow_http = config.allow_http;
    let redirects = reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= 5 {
            return attempt.error("more than 5 redirects");
        }
        match refusal(attempt.url(), allow_http) {
            None => attempt.follow(),
            Some(why) => {
                let msg = format!("redirect to {} refused: {why}", attempt.url());
                attempt.error(msg)
            }
        }
    });
    let mut builder = reqwest::Client::builder()
        .timeout(FETCH_TIMEOUT)
        .redirect(redirects);
    if let Some(path) = &config.ca_file {
        let what = format!(
            "identity.oidc {:?}: ca_file {}",
            config.name,
            path.display()
        );
        let pem = std::fs::read(path).map_err(|e| IdentityError::Setup {
            what: what.clone(),
            reason: format!(
                "cannot read it ({e}); give the PEM file of the CA that signed the provider's \
                 certificate (relative to the configuration file's folder)"
            ),
        })?;
        let certs =
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| IdentityError::Setup {
                what: what.clone(),
                reason: format!("is not a PEM certificate bundle ({})", error_chain(&e)),
            })?;
        if certs.is_empty() {
            return Err(IdentityError::Setup {
                what,
                reason: "holds no certificate (expected one or more -----BEGIN CERTIFICATE----- \
                         blocks: the CA that signed the provider's certificate)"
                    .into(),
            });
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(|e| IdentityError::Setup {
        what: format!("identity.oidc {:?}: HTTP client", config.name),
        reason: error_chain(&e),
    })
}

/// An error and its causes, outermost first, joined with ": " (a cause whose text the
/// previous one already shows is left out). A TLS certificate refusal gets a last word on
/// what to do about it.
pub fn error_chain(e: &(dyn StdError + 'static)) -> String {
    let mut out = e.to_string();
    let mut advice = tls_advice(e);
    let mut cur = e.source();
    while let Some(err) = cur {
        if advice.is_none() {
            advice = tls_advice(err);
        }
        let text = err.to_string();
        if !text.is_empty() && !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = err.source();
    }
    if let Some(advice) = advice {
        out.push_str(" (");
        out.push_str(&advice);
        out.push(')');
    }
    out
}

const UNKNOWN_ISSUER: &str = "TLS: the provider's certificate is not signed by a CA the gateway \
     trusts; if it uses a private CA, set ca_file on this [[identity.oidc]] entry to that CA's PEM file";
const WRONG_NAME: &str = "TLS: the provider's certificate does not name the host in the URL; use \
     the host name the certificate was issued for";
const OUT_OF_DATE: &str = "TLS: the provider's certificate is outside its validity period (or \
     the gateway's clock is wrong)";

/// What to do about a TLS failure, when `err` is one: a rustls error, possibly inside an
/// `io::Error` (how the connector reports it), or, when a wrapper hides the type, an error
/// whose text is rustls's "invalid peer certificate: …".
fn tls_advice(err: &(dyn StdError + 'static)) -> Option<String> {
    let tls = err.downcast_ref::<rustls::Error>().or_else(|| {
        err.downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    });
    let Some(tls) = tls else {
        let text = err.to_string();
        let rest = text.strip_prefix("invalid peer certificate: ")?;
        return Some(if rest.starts_with("UnknownIssuer") {
            UNKNOWN_ISSUER.into()
        } else if rest.starts_with("NotValidForName") {
            WRONG_NAME.into()
        } else if rest.starts_with("Expired") || rest.starts_with("NotValidYet") {
            OUT_OF_DATE.into()
        } else {
            format!("TLS: the provider's certificate was refused ({rest})")
        });
    };
    use rustls::CertificateError as C;
    Some(match tls {
        rustls::Error::InvalidCertificate(C::UnknownIssuer) => UNKNOWN_ISSUER.into(),
        rustls::Error::InvalidCertificate(
            C::NotValidForName | C::NotValidForNameContext { .. },
        ) => WRONG_NAME.into(),
        rustls::Error::InvalidCertificate(
            C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. },
        ) => OUT_OF_DATE.into(),
        rustls::Error::InvalidCertificate(other) => {
            format!("TLS: the provider's certificate was refused ({other:?})")
        }
        other => format!("TLS handshake with the provider failed: {other}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer(extra: serde_json::Value) -> OidcIssuerConfig {
        let mut v = serde_json::json!({
            "name": "corp",
            "issuer": "https://idp.corp.example",
            "audiences": ["portcullis"],
        });
        for (k, x) in extra.as_object().into_iter().flatten() {
            v[k] = x.clone();
        }
        serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn https_and_loopback_http_pass_without_warning() {
        for extra in [
            serde_json::json!({}),
            serde_json::json!({"issuer": "http://127.0.0.1:4000"}),
            serde_json::json!({"issuer": "http://127.9.9.9"}),
            serde_json::json!({"issuer": "http://[::1]:8080/realms/x"}),
            serde_json::json!({"issuer": "http://LocalHost:9000"}),
            serde_json::json!({"issuer": "http://idp.corp.example", "jwks_uri": "https://idp.corp.example/jwks"}),
        ] {
            let warnings =
                check_transport(&issuer(extra.clone())).unwrap_or_else(|e| panic!("{extra}: {e}"));
            assert!(warnings.is_empty(), "{extra}: {warnings:?}");
        }
    }

    #[test]
    fn plain_http_off_loopback_is_refused_naming_issuer_setting_and_fix() {
        for (extra, setting) in [
            (
                serde_json::json!({"issuer": "http://idp.corp.example"}),
                "issuer",
            ),
            (
                serde_json::json!({"issuer": "http://10.0.0.7:8080"}),
                "issuer",
            ),
            (
                serde_json::json!({"discovery_url": "http://idp.corp.example/.well-known/openid-configuration"}),
                "discovery_url",
            ),
            (
                serde_json::json!({"jwks_uri": "http://keys.corp.example/jwks"}),
                "jwks_uri",
            ),
            // "localhost" inside a longer name is not loopback.
            (
                serde_json::json!({"issuer": "http://localhost.attacker.example"}),
                "issuer",
            ),
        ] {
            let err = check_transport(&issuer(extra.clone()))
                .err()
                .unwrap_or_else(|| panic!("{extra}: accepted"))
                .to_string();
            for needle in [
                "identity.oidc \"corp\"",
                &format!("{setting} = "),
                "plain http",
                "https://",
                "ca_file",
                "allow_http = true",
            ] {
                assert!(
                    err.contains(needle),
                    "{extra}: {needle:?} missing in: {err}"
                );
            }
        }
        let err = check_transport(&issuer(
            serde_json::json!({"issuer": "ftp://idp.corp.example"}),
        ))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.contains("scheme \"ftp\""), "{err}");
        let err = check_transport(&issuer(serde_json::json!({"issuer": "idp.corp.example"})))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("is not a URL"), "{err}");
    }

    #[test]
    fn allow_http_accepts_with_a_warning() {
        let warnings = check_transport(&issuer(
            serde_json::json!({"issuer": "http://idp.corp.example", "allow_http": true}),
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("allow_http = true") && warnings[0].contains("idp.corp.example"),
            "{warnings:?}"
        );
        // A discovered jwks_uri follows the same rule.
        let strict = issuer(serde_json::json!({}));
        let err = check_runtime_url(&strict, "http://keys.corp.example/jwks").err();
        assert!(
            err.as_deref().is_some_and(|e| e.contains("allow_http")),
            "{err:?}"
        );
        assert!(check_runtime_url(&strict, "https://keys.corp.example/jwks").is_ok());
    }

    #[test]
    fn ca_file_problems_are_setup_errors() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let missing = dir.path().join("nope.pem");
        let err = http_client(&issuer(serde_json::json!({"ca_file": missing})))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("cannot read it") && err.contains("nope.pem"),
            "{err}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap_or_else(|e| panic!("{e}"));
        let err = http_client(&issuer(serde_json::json!({"ca_file": empty})))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("no certificate") || err.contains("PEM"),
            "{err}"
        );
    }

    #[test]
    fn error_chain_walks_the_sources() {
        let inner =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("error sending request")
            }
        }
        impl StdError for Outer {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                Some(&self.0)
            }
        }
        assert_eq!(
            error_chain(&Outer(inner)),
            "error sending request: Connection refused"
        );
        let tls = std::io::Error::other(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        ));
        let text = error_chain(&Outer(tls));
        assert!(
            text.contains("invalid peer certificate: UnknownIssuer") && text.contains("ca_file"),
            "{text}"
        );
    }
}
