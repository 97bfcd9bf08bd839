//! A test PKI: a CA that signs the simulator's server certificate and a
//! merchant's client certificate.

use std::path::Path;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use wxpay::simulator::tls::TlsFiles;

pub struct Pki {
    pub ca_pem: String,
    pub files: TlsFiles,
    pub client_identity_pem: String,
    /// The client certificate and key as separate PEM files.
    pub client_cert: std::path::PathBuf,
    pub client_key: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write pem");
    path
}

/// A CA that signs the server's certificate and a merchant's client certificate.
pub fn pki() -> Pki {
    let dir = tempfile::tempdir().expect("dir");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("ca key")).expect("ca");
    let server_key = KeyPair::generate().expect("server key");
    let server = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("server params")
        .signed_by(&server_key, &ca)
        .expect("server cert");
    let client_key = KeyPair::generate().expect("client key");
    let client = CertificateParams::new(vec!["10000100".to_owned()])
        .expect("client params")
        .signed_by(&client_key, &ca)
        .expect("client cert");
    let files = TlsFiles {
        cert: write(dir.path(), "server.pem", &server.pem()),
        key: write(dir.path(), "server.key", &server_key.serialize_pem()),
        client_ca: write(dir.path(), "ca.pem", &ca.pem()),
    };
    Pki {
        ca_pem: ca.pem(),
        files,
        client_identity_pem: format!("{}{}", client.pem(), client_key.serialize_pem()),
        client_cert: write(dir.path(), "client.pem", &client.pem()),
        client_key: write(dir.path(), "client.key", &client_key.serialize_pem()),
        _dir: dir,
    }
}

pub fn client(pki: &Pki, with_identity: bool) -> reqwest::Client {
    let root = reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).expect("root");
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(root);
    if with_identity {
        builder = builder.identity(
            reqwest::Identity::from_pem(pki.client_identity_pem.as_bytes()).expect("identity"),
        );
    }
    builder.build().expect("client")
}
