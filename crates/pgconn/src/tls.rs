//! The rustls client configuration for each sslmode. rustls does the TLS; this only decides what
//! is checked: nothing (`require` without roots, and the opportunistic `allow`/`prefer`), the
//! chain (`verify-ca`, or `require` given roots, as libpq does), or the chain and the name
//! (`verify-full`).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::target::{Pem, RootCert, SslMode, TlsOptions};
use crate::ConnectError;

/// What the server's certificate is checked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    Nothing,
    Chain,
    ChainAndName,
}

/// The connector for `options`; files are read now, so a missing one fails before any connection.
pub(crate) fn connector(options: &TlsOptions) -> Result<MakeRustlsConnect, ConnectError> {
    let check = match (options.mode, &options.root_cert) {
        (SslMode::VerifyFull, _) => Check::ChainAndName,
        (SslMode::VerifyCa, _) | (SslMode::Require, Some(_)) => Check::Chain,
        _ => Check::Nothing,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = match check {
        Check::Nothing => None,
        Check::Chain | Check::ChainAndName => {
            let roots = roots(options.root_cert.as_ref().expect("checked by the target"))?;
            let webpki =
                WebPkiServerVerifier::builder_with_provider(roots.into(), provider.clone())
                    .build()
                    .map_err(|e| ConnectError::Config(format!("sslrootcert: {e}")))?;
            Some(webpki)
        }
    };
    let verifier: Arc<dyn ServerCertVerifier> = match (check, chain) {
        (Check::ChainAndName, Some(webpki)) => webpki,
        (_, chain) => Arc::new(Relaxed {
            chain,
            algorithms: provider.signature_verification_algorithms,
        }),
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConnectError::Config(format!("TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match &options.client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = certificates(cert, "sslcert")?;
            let parsed = match key {
                Pem::File(path) => PrivateKeyDer::from_pem_file(path),
                Pem::Inline(text) => PrivateKeyDer::from_pem_slice(text.as_bytes()),
            };
            let key = parsed
                .map_err(|e| ConnectError::Config(format!("sslkey {}: {e}", key.describe())))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| ConnectError::Config(format!("sslcert/sslkey: {e}")))?
        }
    };
    Ok(MakeRustlsConnect::new(config))
}

fn roots(source: &RootCert) -> Result<RootCertStore, ConnectError> {
    let mut store = RootCertStore::empty();
    match source {
        RootCert::Pem(pem) => {
            for cert in certificates(pem, "sslrootcert")? {
                store.add(cert).map_err(|e| {
                    ConnectError::Config(format!("sslrootcert {}: {e}", pem.describe()))
                })?;
            }
        }
        RootCert::System => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(ConnectError::Config(
                    "sslrootcert=system: the operating system's trust store has no certificates"
                        .into(),
                ));
            }
        }
    }
    Ok(store)
}

fn certificates(pem: &Pem, setting: &str) -> Result<Vec<CertificateDer<'static>>, ConnectError> {
    let fail = |why: String| ConnectError::Config(format!("{setting} {}: {why}", pem.describe()));
    let parsed: Result<Vec<_>, _> = match pem {
        Pem::File(path) => CertificateDer::pem_file_iter(path)
            .map_err(|e| fail(e.to_string()))?
            .collect(),
        Pem::Inline(text) => CertificateDer::pem_slice_iter(text.as_bytes()).collect(),
    };
    let certs = parsed.map_err(|e| fail(e.to_string()))?;
    if certs.is_empty() {
        return Err(fail("no PEM certificate in it".into()));
    }
    Ok(certs)
}

/// `verify-ca` (with `chain`): the chain must lead to a trusted root, the name is not checked.
/// `require` without roots, `allow`, `prefer` (no `chain`): any certificate is taken, as libpq does.
/// Either way the handshake signatures are checked, so the peer holds the key it shows.
#[derive(Debug)]
struct Relaxed {
    chain: Option<Arc<WebPkiServerVerifier>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Relaxed {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
