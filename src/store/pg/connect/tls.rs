//! The TLS side of `sslmode`: a rustls client config per mode, on the ring provider given
//! explicitly (no process-wide default to install), with the two verifiers libpq's weaker modes
//! need and rustls does not ship: none at all (`prefer`, `require`) and chain-only (`verify-ca`).

use super::{PgUrlError, TlsMode};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::sync::Arc;

/// The rustls config for a mode, on the ring provider given explicitly.
pub(super) fn client_config(mode: TlsMode, root_cert: Option<&str>) -> Result<ClientConfig, PgUrlError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = verifier(mode, root_cert, &provider)?;
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PgUrlError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

pub(super) fn verifier(
    mode: TlsMode,
    root_cert: Option<&str>,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ServerCertVerifier>, PgUrlError> {
    let algs = provider.signature_verification_algorithms;
    let roots = || match root_cert {
        Some(path) => load_roots(path),
        // libpq would read ~/.postgresql/root.crt; a service has no such home, so the public
        // web PKI it is (a managed PostgreSQL's certificate chains to it).
        None => Ok(RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() }),
    };
    Ok(match mode {
        // Disable never reaches the handshake; the connector just needs a config.
        TlsMode::Disable | TlsMode::Prefer | TlsMode::Require => Arc::new(NoVerify { algs }),
        TlsMode::VerifyCa => Arc::new(ChainOnly { roots: roots()?, algs }),
        TlsMode::VerifyFull => WebPkiServerVerifier::builder_with_provider(Arc::new(roots()?), provider.clone())
            .build()
            .map_err(|e| PgUrlError::Tls(e.to_string()))?,
    })
}

fn load_roots(path: &str) -> Result<RootCertStore, PgUrlError> {
    let invalid = |detail: String| PgUrlError::RootCertInvalid { path: path.to_owned(), detail };
    let pem = std::fs::read(path).map_err(|error| PgUrlError::RootCertRead { path: path.to_owned(), error })?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| invalid(e.to_string()))?;
        roots.add(cert).map_err(|e| invalid(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(invalid("no CERTIFICATE block found".into()));
    }
    Ok(roots)
}

/// `prefer` and `require`: any certificate is accepted, but the handshake signatures are still
/// checked, so the server holds the key of the certificate it showed (SCRAM's channel binding
/// rests on that).
#[derive(Debug)]
struct NoVerify {
    algs: WebPkiSupportedAlgorithms,
}

/// `verify-ca`: the chain must lead to a trusted root; the host name is not looked at.
#[derive(Debug)]
struct ChainOnly {
    roots: RootCertStore,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algs.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}
