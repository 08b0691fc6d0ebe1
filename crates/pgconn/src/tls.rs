//! The rustls client configuration for each sslmode. rustls does the TLS; this only decides what
//! is checked: nothing (`require` without roots, and the opportunistic `allow`/`prefer`), the
//! chain (`verify-ca`, or `require` given roots, as libpq does), or the chain and the name
//! (`verify-full`).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
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
    let verifier: Arc<dyn ServerCertVerifier> = match check {
        Check::Nothing => Arc::new(Unchecked(provider.clone())),
        Check::Chain | Check::ChainAndName => {
            let roots = roots(options.root_cert.as_ref().expect("checked by the target"))?;
            let webpki =
                WebPkiServerVerifier::builder_with_provider(roots.into(), provider.clone())
                    .build()
                    .map_err(|e| ConnectError::Config(format!("sslrootcert: {e}")))?;
            if check == Check::Chain {
                Arc::new(ChainOnly(webpki))
            } else {
                webpki
            }
        }
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

/// `verify-ca`: the chain must lead to a trusted root; the name is not checked.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
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
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `require` without roots, `allow`, `prefer`: encrypted, but any certificate is taken (libpq's
/// behaviour). The handshake signatures are still checked, so the peer holds the key it shows.
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
