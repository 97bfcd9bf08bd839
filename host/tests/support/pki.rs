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
    /// The client certificate and key as WeChat ships them: PKCS#12 with
    /// legacy encryption (3DES, SHA-1 MAC), the merchant id as password.
    pub client_p12: std::path::PathBuf,
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
    let client_p12 = dir.path().join("apiclient_cert.p12");
    std::fs::write(
        &client_p12,
        legacy_p12(client.der(), &client_key.serialize_der()),
    )
    .expect("write p12");
    Pki {
        ca_pem: ca.pem(),
        files,
        client_identity_pem: format!("{}{}", client.pem(), client_key.serialize_pem()),
        client_cert: write(dir.path(), "client.pem", &client.pem()),
        client_key: write(dir.path(), "client.key", &client_key.serialize_pem()),
        client_p12,
        _dir: dir,
    }
}

/// A WeChat-style `apiclient_cert.p12`, password `10000100`.
fn legacy_p12(cert_der: &[u8], key_der: &[u8]) -> Vec<u8> {
    use p12_keystore::{
        Certificate, EncryptionAlgorithm, KeyStore, KeyStoreEntry, MacAlgorithm, PrivateKey,
        PrivateKeyChain,
    };
    let key = PrivateKey::from_der(key_der).expect("PKCS#8 key");
    let cert = Certificate::from_der(cert_der).expect("certificate");
    let mut store = KeyStore::new();
    store.add_entry(
        "merchant",
        KeyStoreEntry::PrivateKeyChain(PrivateKeyChain::new("merchant", key, [cert])),
    );
    store
        .writer("10000100")
        .encryption_algorithm(EncryptionAlgorithm::PbeWithShaAnd3KeyTripleDesCbc)
        .mac_algorithm(MacAlgorithm::HmacSha1)
        .write()
        .expect("write PKCS#12")
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
