//! How agentctl reaches its PostgreSQL journal: `storage.url` read into a connection config and a
//! TLS mode, the settings every session carries, a pool and a dedicated connection.
//!
//! We read `sslmode` and `sslrootcert` ourselves. tokio-postgres knows only disable, prefer and
//! require, refuses verify-ca and verify-full and ignores the root file, while an operator writes
//! the URL they would give `psql`, so every mode means here what it means to libpq — with rustls
//! and the ring provider, no OpenSSL, and no process-wide crypto provider to install first.
//!
//! The password never leaves this module in a message: errors name a parameter, never its value,
//! and [`redact`] is what logs and errors show of a URL.

mod tls;

use crate::config::SyncMode;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// A URL without `connect_timeout` gets this one: without it a host that drops packets would hold
/// agentctl's start (and every pool slot) for as long as the kernel keeps retrying.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

const SCHEMES: [&str; 2] = ["postgres://", "postgresql://"];

/// Why `storage.url` cannot be used. No variant carries the password.
#[derive(Debug, thiserror::Error)]
pub enum PgUrlError {
    #[error("storage.url: must start with postgres:// or postgresql://")]
    Scheme,
    #[error(
        "storage.url: cannot tell where the user:password part ends; percent-encode '/', '?' and '@' \
         in the password (%2F, %3F, %40) and '@' in the database name and parameters"
    )]
    Ambiguous,
    #[error("storage.url: the {0} parameter holds an invalid percent-escape")]
    Escape(&'static str),
    #[error("storage.url: unknown sslmode '{0}' (use disable, prefer, require, verify-ca or verify-full)")]
    SslMode(String),
    #[error("storage.url: cannot read sslrootcert {path}: {error}")]
    RootCertRead { path: String, error: std::io::Error },
    #[error("storage.url: sslrootcert {path} holds no usable PEM certificate: {detail}")]
    RootCertInvalid { path: String, detail: String },
    #[error("storage.url: {}", chain(.0))]
    Url(tokio_postgres::Error),
    #[error("storage.url: cannot set up TLS: {0}")]
    Tls(String),
}

/// Why no connection (or pool) to the journal could be had. Names the server by its redacted URL.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot connect to PostgreSQL at {target}: {}", chain(.error))]
    Connect { target: String, error: tokio_postgres::Error },
    #[error("cannot build the PostgreSQL pool for {target}: {error}")]
    Pool { target: String, error: deadpool_postgres::BuildError },
}

/// tokio-postgres's `Display` stops at "db error" or "error connecting to server"; the why is in
/// its sources, which an operator needs to see.
pub(super) fn chain(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// libpq's `sslmode`, all five that matter (libpq's `allow` is refused: it tries plain text first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain TCP.
    Disable,
    /// TLS if the server offers it, plain otherwise; the certificate is not checked. The default.
    Prefer,
    /// TLS or no connection, but — as in libpq — the certificate is *not* verified: this keeps
    /// passive eavesdroppers out, not an active man in the middle. Also as in libpq, a URL that
    /// names an `sslrootcert` turns this into [`TlsMode::VerifyCa`].
    Require,
    /// TLS with the chain verified against `sslrootcert` (the webpki roots without one), whatever
    /// host name the certificate carries.
    VerifyCa,
    /// TLS with the chain verified and the certificate issued for the host connected to.
    VerifyFull,
}

impl TlsMode {
    fn from_libpq(value: &str) -> Result<TlsMode, PgUrlError> {
        Ok(match value {
            "disable" => TlsMode::Disable,
            "prefer" => TlsMode::Prefer,
            "require" => TlsMode::Require,
            "verify-ca" => TlsMode::VerifyCa,
            "verify-full" => TlsMode::VerifyFull,
            other => return Err(PgUrlError::SslMode(other.to_owned())),
        })
    }
}

/// Where the journal lives: `storage.url` parsed once, at start, so a bad URL or an unreadable
/// root certificate stops agentctl before it accepts anything.
#[derive(Clone)]
pub struct PgTarget {
    config: tokio_postgres::Config,
    tls_mode: TlsMode,
    tls: MakeRustlsConnect,
    redacted: String,
}

impl PgTarget {
    /// Reads a `postgres://` or `postgresql://` URL (libpq's syntax). The user:password part ends
    /// at the last '@', so a password holding a raw '@' or ':' still reads as one.
    pub fn parse(url: &str) -> Result<PgTarget, PgUrlError> {
        let parts = UrlParts::split(url).ok_or(PgUrlError::Scheme)?;
        if parts.ambiguous() {
            return Err(PgUrlError::Ambiguous);
        }
        let mut tls_mode = TlsMode::Prefer;
        let mut root_cert = None;
        let mut kept = Vec::new();
        for pair in parts.query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match percent_decode(key).as_deref() {
                Some("sslmode") => {
                    let value = percent_decode(value).ok_or(PgUrlError::Escape("sslmode"))?;
                    tls_mode = TlsMode::from_libpq(&value)?;
                }
                Some("sslrootcert") => {
                    root_cert = Some(percent_decode(value).ok_or(PgUrlError::Escape("sslrootcert"))?);
                }
                // Everything else is tokio-postgres's to judge (it names an unknown key, not a value).
                _ => kept.push(pair),
            }
        }
        if tls_mode == TlsMode::Require && root_cert.is_some() {
            tls_mode = TlsMode::VerifyCa;
        }

        // tokio-postgres cuts the credentials at the first '@'; ours end at the last one, so the
        // ones before it are escaped (it percent-decodes user and password itself).
        let mut rest = String::from("postgres://");
        if let Some(userinfo) = parts.userinfo {
            rest.push_str(&userinfo.replace('@', "%40"));
            rest.push('@');
        }
        rest.push_str(parts.location);
        if !kept.is_empty() {
            rest.push('?');
            rest.push_str(&kept.join("&"));
        }
        let mut config = tokio_postgres::Config::from_str(&rest).map_err(PgUrlError::Url)?;
        config.ssl_mode(match tls_mode {
            TlsMode::Disable => SslMode::Disable,
            TlsMode::Prefer => SslMode::Prefer,
            TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull => SslMode::Require,
        });
        let tls = MakeRustlsConnect::new(tls::client_config(tls_mode, root_cert.as_deref())?);
        Ok(PgTarget { config, tls_mode, tls, redacted: redact(url) })
    }

    /// The connection settings read from the URL, before [`session_config`] adds ours.
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    pub fn tls_mode(&self) -> TlsMode {
        self.tls_mode
    }

    /// The TLS connector for this target (cheap to clone: the rustls config is shared).
    pub fn tls(&self) -> MakeRustlsConnect {
        self.tls.clone()
    }

    /// The URL with its password hidden, for logs and messages.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }
}

impl FromStr for PgTarget {
    type Err = PgUrlError;
    fn from_str(url: &str) -> Result<PgTarget, PgUrlError> {
        PgTarget::parse(url)
    }
}

impl fmt::Display for PgTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgTarget").field("url", &self.redacted).field("tls_mode", &self.tls_mode).finish()
    }
}

/// The startup `options` that fix the session's durability, whatever the role or database default
/// says: `full` waits for the local WAL flush and for any synchronous standby the server is set up
/// with (`on`); `normal` waits for the local flush only (`local`). Neither is `off`: an answer of
/// "stored" never rests on a commit the server has not written down.
pub fn session_options(sync: SyncMode) -> &'static str {
    match sync {
        SyncMode::Full => "-c synchronous_commit=on",
        SyncMode::Normal => "-c synchronous_commit=local",
    }
}

/// The config every journal connection opens with: the URL's, plus [`session_options`] after any
/// `options` the URL carries (so ours win a conflict), `application_name=agentctl` unless the URL
/// names one, and [`CONNECT_TIMEOUT`] unless it sets its own.
pub fn session_config(target: &PgTarget, sync: SyncMode) -> tokio_postgres::Config {
    let mut config = target.config.clone();
    let options = match config.get_options().map(str::trim) {
        Some(theirs) if !theirs.is_empty() => format!("{theirs} {}", session_options(sync)),
        _ => session_options(sync).to_owned(),
    };
    config.options(options);
    if config.get_application_name().is_none() {
        config.application_name("agentctl");
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    config
}

/// A pool of up to `size` sessions (at least one). `Fast` recycling: a connection that went back
/// to the pool is reused without a round trip to test it; one that the server closed is dropped
/// when noticed, and the caller's retry takes a fresh one.
pub fn pool(target: &PgTarget, sync: SyncMode, size: usize) -> Result<deadpool_postgres::Pool, ConnectError> {
    use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
    let manager = Manager::from_config(
        session_config(target, sync),
        target.tls(),
        ManagerConfig { recycling_method: RecyclingMethod::Fast },
    );
    Pool::builder(manager)
        .max_size(size.max(1))
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|error| ConnectError::Pool { target: target.redacted.clone(), error })
}

/// One dedicated session (for what must not share a pooled one: migrations, `LISTEN`, long
/// transactions). Its connection runs on a tokio task that ends when the client is dropped.
pub async fn connect_one(target: &PgTarget, sync: SyncMode) -> Result<tokio_postgres::Client, ConnectError> {
    let (client, connection) = session_config(target, sync)
        .connect(target.tls())
        .await
        .map_err(|error| ConnectError::Connect { target: target.redacted.clone(), error })?;
    let target = target.redacted.clone();
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!("the journal's connection to PostgreSQL at {target} ended: {}", chain(&e));
        }
    });
    Ok(client)
}

/// The URL with the password (in the user:password part or a `password=` parameter) shown as
/// `***` and nothing else changed. Where the URL is ambiguous more than the password is hidden,
/// never less; input that is not a PostgreSQL URL at all comes back as `postgres://***`.
pub fn redact(url: &str) -> String {
    let Some(parts) = UrlParts::split(url) else {
        return "postgres://***".to_owned();
    };
    let mut out = String::from(parts.scheme);
    match parts.userinfo {
        // A raw '/' or '?' before the last '@' may be part of the password: hide all of it.
        Some(_) if parts.ambiguous() => out.push_str("***@"),
        Some(userinfo) => match userinfo.split_once(':') {
            Some((user, _)) => {
                out.push_str(user);
                out.push_str(":***@");
            }
            None => {
                out.push_str(userinfo);
                out.push('@');
            }
        },
        None => {}
    }
    out.push_str(parts.location);
    if let Some(query) = parts.query {
        out.push('?');
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) => match percent_decode(key).as_deref() {
                    Some("password") | None => format!("{key}=***"),
                    Some(_) => pair.to_owned(),
                },
                None if pair.is_empty() => String::new(),
                // Not key=value: a password split off by a raw '&' would look like this.
                None => "***".to_owned(),
            })
            .collect();
        out.push_str(&pairs.join("&"));
    }
    out
}

/// A PostgreSQL URL cut where we need it: the user:password part ends at the *last* '@' (no host,
/// port or database name holds one unescaped), the query starts at the first '?' after it.
struct UrlParts<'a> {
    scheme: &'static str,
    userinfo: Option<&'a str>,
    /// Hosts, ports and the database name.
    location: &'a str,
    query: Option<&'a str>,
}

impl<'a> UrlParts<'a> {
    fn split(url: &'a str) -> Option<UrlParts<'a>> {
        let (scheme, rest) = SCHEMES.iter().find_map(|s| url.strip_prefix(s).map(|rest| (*s, rest)))?;
        let (userinfo, after) = match rest.rfind('@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        let (location, query) = match after.split_once('?') {
            Some((location, query)) => (location, Some(query)),
            None => (after, None),
        };
        Some(UrlParts { scheme, userinfo, location, query })
    }

    /// A '/' or '?' before the last '@' is either a password holding them unescaped or an '@' in
    /// the database name or a parameter; we cannot tell which, so we neither guess nor show it.
    fn ambiguous(&self) -> bool {
        self.userinfo.is_some_and(|u| u.contains(['/', '?']))
    }
}

/// RFC 3986 percent-decoding (a '+' stays a '+', as libpq reads it); `None` on a bad escape or
/// a result that is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).filter(|h| h.iter().all(u8::is_ascii_hexdigit))?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests;
