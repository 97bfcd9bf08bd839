//! The crate's throwaway PKI in a temporary directory that lives as long
//! as the value.

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

/// A CA that signs the server's certificate and a merchant's client certificate.
pub fn pki() -> Pki {
    let dir = tempfile::tempdir().expect("dir");
    let generated = wxpay::simulator::pki::generate(dir.path(), "10000100").expect("pki");
    Pki {
        ca_pem: generated.ca_pem,
        files: generated.files,
        client_identity_pem: generated.client_identity_pem,
        client_cert: generated.client_cert,
        client_key: generated.client_key,
        client_p12: generated.client_p12,
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
