//! HTTPS for the simulator, with WeChat's client-certificate rule.
//!
//! Refund and reverse (`/secapi/...`) need the merchant's client
//! certificate; the other endpoints do not. The TLS layer therefore asks
//! every client for a certificate, accepts connections without one, and
//! tells the protocol layer whether a verified certificate was presented:
//! a `/secapi/` request without one is refused.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use super::Simulator;
use crate::error::Error;

/// Whether the TLS client presented a certificate signed by the client CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientCertificate(pub bool);

/// The files HTTPS needs.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The server's certificate chain (PEM).
    pub cert: PathBuf,
    /// The server's private key (PEM).
    pub key: PathBuf,
    /// The CA that signs merchants' client certificates (PEM).
    pub client_ca: PathBuf,
}

fn read_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::input(path.display().to_string(), e)
}

/// A rustls server configuration that requests, but does not require, a
/// client certificate.
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| read_error(&files.cert, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_error(&files.cert, e))?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| read_error(&files.key, e))?;
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(&files.client_ca)
        .map_err(|e| read_error(&files.client_ca, e))?
    {
        let ca = ca.map_err(|e| read_error(&files.client_ca, e))?;
        roots.add(ca).map_err(|e| read_error(&files.client_ca, e))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| read_error(&files.client_ca, e))?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::input("TLS", e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| read_error(&files.cert, e))?;
    Ok(Arc::new(config))
}

/// Serves HTTPS on `listener` until the process ends.
pub async fn serve(
    simulator: Simulator,
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> Result<(), Error> {
    let acceptor = TlsAcceptor::from(config);
    loop {
        let (mut tcp, _) = listener
            .accept()
            .await
            .map_err(|e| Error::input("TLS listener", e))?;
        crate::listen::send_at_once(&mut tcp);
        let acceptor = acceptor.clone();
        let app = simulator.router();
        tokio::spawn(async move {
            // A failed handshake is the client's problem; the server goes on.
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let presented = tls
                .get_ref()
                .1
                .peer_certificates()
                .is_some_and(|c| !c.is_empty());
            let service = hyper::service::service_fn(
                move |mut request: hyper::Request<hyper::body::Incoming>| {
                    request
                        .extensions_mut()
                        .insert(ClientCertificate(presented));
                    app.clone().oneshot(request)
                },
            );
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

impl Simulator {
    /// Binds `addr` and serves HTTPS in the background; returns the bound address.
    pub async fn spawn_tls(
        self,
        addr: std::net::SocketAddr,
        files: &TlsFiles,
    ) -> Result<std::net::SocketAddr, Error> {
        let config = server_config(files)?;
        let (listener, bound) = super::bind(addr).await?;
        super::detach(serve(self, listener, config));
        Ok(bound)
    }
}
