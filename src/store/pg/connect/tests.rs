//! storage.url parsing, redaction and TLS verification on their own, then sessions, pools and
//! TLS against the real PostgreSQL (`AGENTCTL_TEST_PG_URL`).

use super::tls::verifier;
use super::*;
use crate::store::pg::testing::{TestSchema, admin, base_url};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use std::sync::Arc;

const CA: &[u8] = include_bytes!("testdata/ca.pem");
const OTHER_CA: &[u8] = include_bytes!("testdata/other-ca.pem");
/// Issued by `ca.pem` for DNS:db.test.
const LEAF: &[u8] = include_bytes!("testdata/leaf.pem");

fn with_param(url: &str, param: &str) -> String {
    format!("{url}{}{param}", if url.contains('?') { '&' } else { '?' })
}

#[test]
fn redact_hides_the_password_and_nothing_else() {
    let cases = [
        ("postgres://u:secret@h:5432/db", "postgres://u:***@h:5432/db"),
        ("postgresql://u:secret@h/db?sslmode=require", "postgresql://u:***@h/db?sslmode=require"),
        ("postgres://u:p@ss@word@h/db", "postgres://u:***@h/db"),
        ("postgres://u:pa:ss:@h/db", "postgres://u:***@h/db"),
        ("postgres://u:p%40ss%3Aw%2F@h/db", "postgres://u:***@h/db"),
        ("postgres://us%40er:x@h/db", "postgres://us%40er:***@h/db"),
        ("postgres://u:@h/db", "postgres://u:***@h/db"),
        ("postgres://u@h/db", "postgres://u@h/db"),
        ("postgres://h/db", "postgres://h/db"),
        ("postgres://u:pw@[::1]:5432,h2:5433/db", "postgres://u:***@[::1]:5432,h2:5433/db"),
        ("postgres://h/db?password=secret&sslmode=disable", "postgres://h/db?password=***&sslmode=disable"),
        ("postgres://h/db?pass%77ord=secret", "postgres://h/db?pass%77ord=***"),
        ("postgres://h/db?options=-csearch_path%3Dfoo", "postgres://h/db?options=-csearch_path%3Dfoo"),
        // A password with a raw '/' or '?', or an '@' after the host: the whole userinfo goes.
        ("postgres://u:ab/cd+=@h/db", "postgres://***@h/db"),
        ("postgres://u:ab?cd@h/db", "postgres://***@h/db"),
        ("postgres://h/db?password=secret&application_name=a@b", "postgres://***@b"),
        // A password split off by a raw '&' does not survive as a bare parameter.
        ("postgres://h/db?password=sec&ret", "postgres://h/db?password=***&***"),
        ("postgres://h/db?pass%zzword=secret", "postgres://h/db?pass%zzword=***"),
    ];
    for (url, want) in cases {
        assert_eq!(redact(url), want, "{url}");
    }
    for garbage in ["", "u:secret@h", "mysql://u:secret@h/db", "POSTGRES://u:secret@h", "host=h password=secret"] {
        assert_eq!(redact(garbage), "postgres://***", "{garbage}");
    }
}

#[test]
fn urls_parse_like_libpq() {
    let t = PgTarget::parse("postgres://us%40er:p@ss:w%25rd@db.example:6432/jour?application_name=me").unwrap();
    let c = t.config();
    assert_eq!(c.get_user(), Some("us@er"));
    assert_eq!(c.get_password(), Some(&b"p@ss:w%rd"[..]), "a raw '@' stays in the password, escapes are decoded");
    assert_eq!(c.get_hosts(), &[tokio_postgres::config::Host::Tcp("db.example".into())]);
    assert_eq!(c.get_ports(), &[6432]);
    assert_eq!(c.get_dbname(), Some("jour"));
    assert_eq!(c.get_application_name(), Some("me"));
    assert_eq!((t.tls_mode(), c.get_ssl_mode()), (TlsMode::Prefer, SslMode::Prefer), "prefer is the default");
    assert_eq!(t.to_string(), "postgres://us%40er:***@db.example:6432/jour?application_name=me");
    assert!(!format!("{t:?}").contains("p@ss"), "{t:?}");

    for (mode, tls, ssl) in [
        ("disable", TlsMode::Disable, SslMode::Disable),
        ("prefer", TlsMode::Prefer, SslMode::Prefer),
        ("require", TlsMode::Require, SslMode::Require),
        ("verify-ca", TlsMode::VerifyCa, SslMode::Require),
        ("verify-full", TlsMode::VerifyFull, SslMode::Require),
    ] {
        let t = PgTarget::parse(&format!("postgres://h/db?sslmode={mode}&sslnegotiation=postgres")).unwrap();
        assert_eq!((t.tls_mode(), t.config().get_ssl_mode()), (tls, ssl), "{mode}");
    }
}

#[test]
fn require_with_a_root_certificate_verifies_the_chain_as_libpq_does() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, CA).unwrap();
    let url = format!("postgres://h/db?sslmode=require&sslrootcert={}", ca.display());
    assert_eq!(PgTarget::parse(&url).unwrap().tls_mode(), TlsMode::VerifyCa);
}

#[test]
fn bad_urls_are_refused_without_showing_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let cases = [
        ("mysql://u:hunter2@h/db", "must start with postgres://"),
        ("postgres://u:hunter2@h/db?sslmode=verify_full", "unknown sslmode 'verify_full'"),
        ("postgres://u:hunter2@h/db?sslmode=allow", "unknown sslmode 'allow'"),
        (
            "postgres://u:hunter2@h/db?sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem",
            "cannot read sslrootcert /nonexistent/ca.pem",
        ),
        (
            "postgres://u:hunter2@h/db?sslmode=verify-full&sslrootcert=%2Fnonexistent%2Fca.pem",
            "cannot read sslrootcert /nonexistent/ca.pem",
        ),
        ("postgres://u:hunter2@h/db?sslmode=verify%zz", "sslmode parameter holds an invalid percent-escape"),
        ("postgres://u:hunter2@h/db?frobnicate=1", "unknown option `frobnicate`"),
        ("postgres://u:hunter2@h:notaport/db", "invalid value for option `port`"),
        ("postgres://u:hun/ter2@h/db", "cannot tell where the user:password part ends"),
        ("postgres://h/db?password=hunter2&application_name=a@b", "cannot tell where the user:password part ends"),
    ];
    for (url, want) in cases {
        let err = PgTarget::parse(url).unwrap_err().to_string();
        assert!(err.starts_with("storage.url: ") && err.contains(want), "{url}: {err}");
        assert!(!err.contains("hunter2") && !err.contains("ter2"), "{url}: {err}");
    }
    let url = format!("postgres://u:hunter2@h/db?sslmode=verify-full&sslrootcert={}", not_pem.display());
    let err = PgTarget::parse(&url).unwrap_err().to_string();
    assert!(err.contains("holds no usable PEM certificate") && !err.contains("hunter2"), "{err}");
}

#[test]
fn sessions_carry_durability_and_a_name() {
    let t = PgTarget::parse("postgres://h/db").unwrap();
    let full = session_config(&t, SyncMode::Full);
    assert_eq!(full.get_options(), Some("-c synchronous_commit=on"));
    assert_eq!(full.get_application_name(), Some("agentctl"));
    assert_eq!(full.get_connect_timeout(), Some(&CONNECT_TIMEOUT));
    let normal = session_config(&t, SyncMode::Normal);
    assert_eq!(normal.get_options(), Some("-c synchronous_commit=local"));

    let t = PgTarget::parse(
        "postgres://h/db?options=-csearch_path%3Dfoo%20-csynchronous_commit%3Doff&application_name=mine&connect_timeout=3",
    )
    .unwrap();
    let c = session_config(&t, SyncMode::Normal);
    assert_eq!(
        c.get_options(),
        Some("-csearch_path=foo -csynchronous_commit=off -c synchronous_commit=local"),
        "ours come last, so they win"
    );
    assert_eq!(c.get_application_name(), Some("mine"));
    assert_eq!(c.get_connect_timeout(), Some(&Duration::from_secs(3)));
}

/// What each mode's verifier says of `leaf.pem` presented as `name`, with `ca` as sslrootcert.
fn verdict(mode: TlsMode, ca: &[u8], name: &str) -> Result<(), rustls::Error> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("root.pem");
    std::fs::write(&path, ca).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = verifier(mode, path.to_str(), &provider).unwrap();
    let leaf = CertificateDer::from_pem_slice(LEAF).unwrap();
    let name = ServerName::try_from(name.to_owned()).unwrap();
    verifier.verify_server_cert(&leaf, &[], &name, &[], UnixTime::now()).map(|_| ())
}

#[test]
fn verify_ca_checks_the_chain_and_verify_full_the_name_too() {
    assert!(verdict(TlsMode::VerifyCa, CA, "db.test").is_ok());
    assert!(verdict(TlsMode::VerifyCa, CA, "elsewhere.test").is_ok(), "verify-ca ignores the host name");
    assert!(verdict(TlsMode::VerifyCa, OTHER_CA, "db.test").is_err(), "an unknown issuer is refused");
    assert!(verdict(TlsMode::VerifyFull, CA, "db.test").is_ok());
    let wrong_name = verdict(TlsMode::VerifyFull, CA, "elsewhere.test").unwrap_err();
    assert!(
        matches!(wrong_name, rustls::Error::InvalidCertificate(ref e) if format!("{e:?}").contains("NotValidForName")),
        "{wrong_name:?}"
    );
    assert!(verdict(TlsMode::VerifyFull, OTHER_CA, "db.test").is_err());
    assert!(verdict(TlsMode::Require, OTHER_CA, "elsewhere.test").is_ok(), "require verifies nothing");
}

async fn one_value(client: &tokio_postgres::Client, sql: &str) -> String {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn every_session_sets_synchronous_commit_over_the_role_default() {
    let admin = admin(&base_url()).await;
    let role = format!("r_{}", uuid::Uuid::new_v4().simple());
    // A password, so the role logs in over TCP whatever the server's authentication (trust here,
    // scram on a fresh Debian cluster).
    let password = uuid::Uuid::new_v4().simple().to_string();
    admin
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN PASSWORD '{password}'; ALTER ROLE {role} SET synchronous_commit = off"
        ))
        .await
        .unwrap();
    let result = async {
        let target = PgTarget::parse(&base_url()).unwrap();
        let mut seen = Vec::new();
        for sync in [SyncMode::Full, SyncMode::Normal] {
            let mut config = session_config(&target, sync);
            config.user(&role).password(&password);
            let (client, connection) = config.connect(target.tls()).await.map_err(|e| chain(&e))?;
            tokio::spawn(connection);
            seen.push(one_value(&client, "SHOW synchronous_commit").await);
            seen.push(one_value(&client, "SHOW application_name").await);
        }
        Ok::<_, String>(seen)
    }
    .await;
    admin.batch_execute(&format!("DROP ROLE {role}")).await.unwrap();
    assert_eq!(result.unwrap(), ["on", "agentctl", "local", "agentctl"], "the role says off; we say otherwise");
}

#[tokio::test]
async fn pools_and_dedicated_connections_open_configured_sessions() {
    let db = TestSchema::new().await;
    let url = with_param(&db.url, "application_name=agentctl-test");
    let target = PgTarget::parse(&url).unwrap();
    let pool = pool(&target, SyncMode::Normal, 2).unwrap();
    let pooled = pool.get().await.unwrap();
    assert_eq!(one_value(&pooled, "SHOW synchronous_commit").await, "local");
    assert_eq!(one_value(&pooled, "SHOW application_name").await, "agentctl-test");
    assert_eq!(one_value(&pooled, "SELECT current_schema()::text").await, db.schema, "the URL's options are kept");
    let own = connect_one(&target, SyncMode::Full).await.unwrap();
    assert_eq!(one_value(&own, "SHOW synchronous_commit").await, "on");
    assert_eq!(one_value(&own, "SELECT current_schema()::text").await, db.schema);
}

#[tokio::test]
async fn an_absent_server_is_named_without_its_password() {
    // Port 1 on loopback: nothing listens there, so the connection is refused at once.
    let target = PgTarget::parse("postgres://u:hunter2@127.0.0.1:1/db?sslmode=disable").unwrap();
    let err = connect_one(&target, SyncMode::Full).await.unwrap_err().to_string();
    assert!(err.contains("postgres://u:***@127.0.0.1:1/db") && err.contains("refused"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

/// Whether the session runs over TLS, as the server sees it.
async fn over_tls(client: &tokio_postgres::Client) -> bool {
    client.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn tls_modes_against_the_server() {
    let admin = admin(&base_url()).await;
    let server_tls = one_value(&admin, "SHOW ssl").await == "on";
    let connect = |mode: &str| {
        let url = with_param(&base_url(), &format!("sslmode={mode}"));
        async move { connect_one(&PgTarget::parse(&url).unwrap(), SyncMode::Full).await }
    };
    assert!(!over_tls(&connect("disable").await.unwrap()).await);
    assert_eq!(over_tls(&connect("prefer").await.unwrap()).await, server_tls, "prefer takes TLS when offered");
    assert!(server_tls, "the TLS tests need a PostgreSQL with ssl = on (it is on the test server)");
    assert!(over_tls(&connect("require").await.unwrap()).await, "require accepts a self-signed certificate");
    let err = connect("verify-full").await.unwrap_err().to_string();
    assert!(
        err.contains("TLS") || err.contains("certificate"),
        "a test server's certificate is not a public one: {err}"
    );

    // verify-ca with the server's own (self-signed) certificate as the root: the chain holds,
    // and the host name (127.0.0.1 here) is not asked about.
    let pem: String = one_value(&admin, "SELECT pg_read_file(current_setting('ssl_cert_file'))").await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("server.pem");
    std::fs::write(&root, pem).unwrap();
    let client = connect(&format!("verify-ca&sslrootcert={}", root.display())).await.unwrap();
    assert!(over_tls(&client).await);
    let wrong_root = dir.path().join("other.pem");
    std::fs::write(&wrong_root, OTHER_CA).unwrap();
    let err = connect(&format!("verify-ca&sslrootcert={}", wrong_root.display())).await.unwrap_err().to_string();
    assert!(err.contains("UnknownIssuer") || err.contains("issuer"), "{err}");
}
