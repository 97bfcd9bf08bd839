//! A throwaway PKI for the simulator's HTTPS: a CA, a server certificate
//! for loopback, and a merchant client certificate as PEM files and as the
//! PKCS#12 file WeChat issues (legacy 3DES, SHA-1 MAC, the mch_id as
//! password). Used by `wxpay demo` and the tests, so the client-certificate
//! path of refunds runs everywhere, not only against WeChat.

use std::path::{Path, PathBuf};

use p12_keystore::{
    Certificate, EncryptionAlgorithm, KeyStore, KeyStoreEntry, MacAlgorithm, PrivateKey,
    PrivateKeyChain,
};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

use super::tls::TlsFiles;
use crate::error::Error;

/// The files written.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The CA certificate (PEM), to trust as the server's issuer.
    pub ca_pem: String,
    /// The CA file.
    pub ca: PathBuf,
    /// What the simulator's HTTPS needs.
    pub files: TlsFiles,
    /// The client certificate (PEM).
    pub client_cert: PathBuf,
    /// The client key (PEM, PKCS#8).
    pub client_key: PathBuf,
    /// The client certificate and key as PKCS#12.
    pub client_p12: PathBuf,
    /// The client certificate and key in one PEM text.
    pub client_identity_pem: String,
}

fn failed(e: impl std::fmt::Display) -> Error {
    Error::input("test PKI", e)
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf, Error> {
    let path = dir.join(name);
    std::fs::write(&path, bytes).map_err(|e| Error::input(path.display().to_string(), e))?;
    Ok(path)
}

/// Generates the PKI into `dir`; the client certificate names `mch_id`,
/// which is also the PKCS#12 password.
pub fn generate(dir: &Path, mch_id: &str) -> Result<Pki, Error> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().map_err(failed)?)
        .map_err(failed)?;
    let server_key = KeyPair::generate().map_err(failed)?;
    let server = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .and_then(|p| p.signed_by(&server_key, &ca))
        .map_err(failed)?;
    let client_key = KeyPair::generate().map_err(failed)?;
    let client = CertificateParams::new(vec![mch_id.to_owned()])
        .and_then(|p| p.signed_by(&client_key, &ca))
        .map_err(failed)?;
    let ca_file = write(dir, "ca.pem", ca.pem().as_bytes())?;
    let files = TlsFiles {
        cert: write(dir, "server.pem", server.pem().as_bytes())?,
        key: write(dir, "server.key", server_key.serialize_pem().as_bytes())?,
        client_ca: ca_file.clone(),
    };
    let p12 = legacy_p12(client.der(), &client_key.serialize_der(), mch_id)?;
    Ok(Pki {
        ca_pem: ca.pem(),
        ca: ca_file,
        files,
        client_cert: write(dir, "apiclient_cert.pem", client.pem().as_bytes())?,
        client_key: write(
            dir,
            "apiclient_key.pem",
            client_key.serialize_pem().as_bytes(),
        )?,
        client_p12: write(dir, "apiclient_cert.p12", &p12)?,
        client_identity_pem: format!("{}{}", client.pem(), client_key.serialize_pem()),
    })
}

/// A WeChat-style `apiclient_cert.p12`.
fn legacy_p12(cert_der: &[u8], key_der: &[u8], password: &str) -> Result<Vec<u8>, Error> {
    let key = PrivateKey::from_der(key_der).map_err(failed)?;
    let cert = Certificate::from_der(cert_der).map_err(failed)?;
    let mut store = KeyStore::new();
    store.add_entry(
        "merchant",
        KeyStoreEntry::PrivateKeyChain(PrivateKeyChain::new("merchant", key, [cert])),
    );
    store
        .writer(password)
        .encryption_algorithm(EncryptionAlgorithm::PbeWithShaAnd3KeyTripleDesCbc)
        .mac_algorithm(MacAlgorithm::HmacSha1)
        .write()
        .map_err(failed)
}
