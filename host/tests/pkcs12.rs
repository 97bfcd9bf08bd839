//! The merchant's client certificate in PKCS#12 form, converted to a PEM
//! identity for the rustls client: modern and legacy (WeChat-style)
//! encryption, certificate chains, and the files that must be refused.

// Test helpers report a failure by panicking.
#![allow(clippy::panic)]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use p12_keystore::{
    Certificate, EncryptionAlgorithm, KeyStore, KeyStoreEntry, MacAlgorithm, PrivateKey,
    PrivateKeyChain,
};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa, KeyPair,
};
use wxpay::pkcs12::{pem_identity_from_pkcs12, reqwest_identity_from_pkcs12};

/// WeChat's default password for `apiclient_cert.p12` is the merchant id.
const MCH_ID: &str = "1900000109";
const WRONG_PASSWORD: &str = "not-the-mch-id-7f3a";
const PREFIX: &str = "client certificate (PKCS#12): ";

/// DER of the PBE object identifiers, to check what a written file uses.
const OID_PBES2: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x05, 0x0d];
const OID_PBE_SHA1_3DES: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x01, 0x03];
const OID_PBE_SHA1_RC2_40: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x01, 0x06];

/// A file made by OpenSSL 3 the way WeChat's were, password [`MCH_ID`]:
/// `openssl pkcs12 -export -legacy` (certificates RC2-40, key 3DES, MAC
/// SHA-1, 2048 iterations), from an EC P-256 key and self-signed certificate.
const OPENSSL_LEGACY_P12: &[&str] = &[
    "MIID6gIBAzCCA7AGCSqGSIb3DQEHAaCCA6EEggOdMIIDmTCCAo8GCSqGSIb3DQEHBqCCAoAwggJ8",
    "AgEAMIICdQYJKoZIhvcNAQcBMBwGCiqGSIb3DQEMAQYwDgQI7zRhET0tRowCAggAgIICSAfeaDDz",
    "5MQoI+M3gV+r6sa9DMDsdeD7C+Yeqr2ruXMoN+WPas8fmdyHi/R7pf7GUzwekPyX3FERfi/tP6Mt",
    "s6K7GL3F6RWrrwXuMwxE1TrT1UUZsi6mtti25EqHp+YoYlCI3DoSZsd48oEjbbQe1e9KywmwfRz8",
    "d+RgBLMLzmhssV6MzrlWSfcHSj+gUWCSussMooRRiYtEsIjrzOJGgjzIDt7QW4WgNfb+P6bsv0mm",
    "S/YYn4x9DOLnCxAleyKkZDmQLJYS4FpysLLyW8v7QOtdKBQ1LEfDEqUc9qNhB1Qg5zVDrOzP9pdH",
    "cG+0tbxZvlopbXvEuKHwuheZSTkpjJ1ILrbTo0UhCa/R/k+zFRxaYVe/+cYkTcvSAgxS8+iRrRV0",
    "pOXemoHlP+CpQHnNbOLArRR+vpbJOchpifzdNQTdViseDgYcVOsf5Uhcs7yNNFYuc5O9dO8fNmC3",
    "VTbA++TGnvWD63GkdeFzDGCOcAl7lG5DX5ZiuUJ1veYTuFoLdojHhcXNLAA0qPMlQQGqypwaprO4",
    "3VBGxhEBwPBHhCq6fTK/Ih/STSehyL5p+GKP+X2cIGTJbXZaFHlANjDyi91FWwARDNib+xmJpVmt",
    "gZ0MUqQG8nHdvu8R5hF59oMj16ceoGonHj1ed0vbI9Wxr5o9Ghc1mRz3QgmlrHHPCm76WhtY2y8F",
    "1Wkj6O4bfcfHgHgdYwvAumXp/Mq+h5hH7YYCK8e+47lZTu8qa9hAz4AF4btioQ2e7HRMkign8UV9",
    "8Qf1uyty2plqMIIBAgYJKoZIhvcNAQcBoIH0BIHxMIHuMIHrBgsqhkiG9w0BDAoBAqCBtDCBsTAc",
    "BgoqhkiG9w0BDAEDMA4ECDNhKMhC08RaAgIIAASBkLeO02rVqgzrhEOKzfeiiz7rBaAsQ0UZBBUI",
    "5JcnBQJRYRO1PlhqBW2aFCGqbPTl2BUfpfZjZICYNAgSCUFHTORTHNgWw0lAQ0TFT8TdelWnQVcK",
    "DzSprL4fY+ys104pZmEP4x2zJ+E3fudhp/zntIoj3xZMw4AXfZ8zSppsq8lfwayCuK9j/lnBH1Sq",
    "0xFKljElMCMGCSqGSIb3DQEJFTEWBBRQWYO1qzL+AcR6Gdk9joH98TtM1zAxMCEwCQYFKw4DAhoF",
    "AAQUq4UfLoiD7Bkd0lAbSCEvN3VXp+IECKREl8EJ3bQzAgIIAA==",
];

/// The certificate and key of [`OPENSSL_LEGACY_P12`] as OpenSSL wrote them
/// (`openssl req -x509` and `openssl genpkey`).
const OPENSSL_PEM: &str = "\
-----BEGIN CERTIFICATE-----
MIIB5zCCAY2gAwIBAgIUVPvQ/ktPterKSUvoOiNoCOnWbQ0wCgYIKoZIzj0EAwIw
SDETMBEGA1UECgwKVGVucGF5LmNvbTETMBEGA1UECwwKMTkwMDAwMDEwOTEcMBoG
A1UEAwwTd3hwYXkgdGVzdCBtZXJjaGFudDAgFw0yNjExMjcyMDIxNDRaGA8yMTI2
MTEwMzIwMjE0NFowSDETMBEGA1UECgwKVGVucGF5LmNvbTETMBEGA1UECwwKMTkw
MDAwMDEwOTEcMBoGA1UEAwwTd3hwYXkgdGVzdCBtZXJjaGFudDBZMBMGByqGSM49
AgEGCCqGSM49AwEHA0IABMSXLLohoAp5TRq4YEj8ACgRG784wyjVjUCx6odj+XkF
upNz4a5RWKZaNvjbTGrjGi93+3N0//OExC0Pk5nFZmOjUzBRMB0GA1UdDgQWBBS3
jmhYj9yxLdvmSuA0kE7Vxd9UHTAfBgNVHSMEGDAWgBS3jmhYj9yxLdvmSuA0kE7V
xd9UHTAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0gAMEUCIE/UKGNbI2Gl
IAWsg5p2yrqZtqo0BBABNt3nqtaVr/ZEAiEAkxuhD0Bm0/9NcWuYvKelt3GkOPve
aFx9PlIeK3PuAfg=
-----END CERTIFICATE-----
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgUsysLgpsiq63zAhB
nUKMLQ8VqmFML3PbNJx3bCIshl2hRANCAATElyy6IaAKeU0auGBI/AAoERu/OMMo
1Y1AseqHY/l5BbqTc+GuUVimWjb420xq4xovd/tzdP/zhMQtD5OZxWZj
-----END PRIVATE KEY-----
";

fn openssl_legacy_p12() -> Vec<u8> {
    STANDARD
        .decode(OPENSSL_LEGACY_P12.concat())
        .expect("fixture base64")
}

/// A certificate and its key, as DER and as rcgen's PEM.
struct Issued {
    cert_der: Vec<u8>,
    cert_pem: String,
    key_der: Vec<u8>,
    key_pem: String,
}

fn params(common_name: &str, ca: bool) -> CertificateParams {
    let mut params = CertificateParams::new(vec![MCH_ID.to_owned()]).expect("params");
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Tenpay.com");
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    if ca {
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    }
    params
}

fn issued(cert: &rcgen::Certificate, key: &KeyPair) -> Issued {
    Issued {
        cert_der: cert.der().to_vec(),
        cert_pem: cert.pem(),
        key_der: key.serialize_der(),
        key_pem: key.serialize_pem(),
    }
}

fn self_signed(common_name: &str) -> Issued {
    let key = KeyPair::generate().expect("key");
    let cert = params(common_name, false)
        .self_signed(&key)
        .expect("self-signed");
    issued(&cert, &key)
}

fn cert(der: &[u8]) -> Certificate {
    Certificate::from_der(der).expect("certificate")
}

fn key_chain(key_der: &[u8], certs: &[&[u8]]) -> KeyStoreEntry {
    let key = PrivateKey::from_der(key_der).expect("PKCS#8 key");
    KeyStoreEntry::PrivateKeyChain(PrivateKeyChain::new(
        "merchant",
        key,
        certs.iter().map(|der| cert(der)),
    ))
}

/// A keystore with one entry: `merchant`'s key and certificate.
fn merchant_store(merchant: &Issued) -> KeyStore {
    let mut store = KeyStore::new();
    store.add_entry(
        "merchant",
        key_chain(&merchant.key_der, &[&merchant.cert_der]),
    );
    store
}

fn write(store: &KeyStore, encryption: EncryptionAlgorithm, mac: MacAlgorithm) -> Vec<u8> {
    store
        .writer(MCH_ID)
        .encryption_algorithm(encryption)
        .mac_algorithm(mac)
        .write()
        .expect("write PKCS#12")
}

fn modern(store: &KeyStore) -> Vec<u8> {
    write(
        store,
        EncryptionAlgorithm::PbeWithHmacSha256AndAes256,
        MacAlgorithm::HmacSha256,
    )
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The blocks of a PEM text as (label, DER), checking its shape on the way:
/// `\n` line ends, full lines of 64 characters, nothing between blocks.
fn blocks(pem: &[u8]) -> Vec<(String, Vec<u8>)> {
    let text = std::str::from_utf8(pem).expect("PEM is ASCII");
    assert!(text.ends_with('\n'), "PEM ends with a newline");
    assert!(!text.contains('\r'), "PEM lines end in \\n");
    let mut lines = text.lines();
    let mut out = Vec::new();
    while let Some(begin) = lines.next() {
        let label = begin
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
            .unwrap_or_else(|| panic!("not a BEGIN line: {begin:?}"));
        let end = format!("-----END {label}-----");
        let mut body: Vec<&str> = Vec::new();
        loop {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("{label} block not closed"));
            if line == end {
                break;
            }
            body.push(line);
        }
        let (last, full) = body.split_last().expect("block has a body");
        assert!(full.iter().all(|l| l.len() == 64), "full lines of 64");
        assert!(!last.is_empty() && last.len() <= 64, "last line 1..=64");
        let der = STANDARD.decode(body.concat()).expect("base64 body");
        out.push((label.to_owned(), der));
    }
    out
}

fn certificate(der: &[u8]) -> (String, Vec<u8>) {
    ("CERTIFICATE".to_owned(), der.to_vec())
}

fn private_key(der: &[u8]) -> (String, Vec<u8>) {
    ("PRIVATE KEY".to_owned(), der.to_vec())
}

/// The PEM identity is exactly the certificate then the PKCS#8 key.
fn assert_round_trip(p12: &[u8], merchant: &Issued) {
    let pem = pem_identity_from_pkcs12(p12, MCH_ID).expect("PEM identity");
    assert_eq!(
        blocks(&pem),
        vec![
            certificate(&merchant.cert_der),
            private_key(&merchant.key_der)
        ]
    );
    // Byte for byte what rcgen writes for the same DER.
    let expected = format!("{}{}", merchant.cert_pem, merchant.key_pem);
    assert_eq!(std::str::from_utf8(&pem).ok(), Some(expected.as_str()));
    // The buffer was sized exactly once, so it never grew and left an
    // unwiped copy of the key behind.
    assert_eq!(pem.capacity(), pem.len());
}

fn rustls_client(identity: reqwest::Identity) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .use_rustls_tls()
        .identity(identity)
        .build()
}

fn assert_refused(result: Result<impl std::fmt::Debug, wxpay::Error>, reason: &str) {
    match result {
        Ok(v) => panic!("expected {reason:?}, got {v:?}"),
        Err(e) => assert_eq!(e.to_string(), format!("{PREFIX}{reason}")),
    }
}

#[test]
fn modern_file_round_trips() {
    let merchant = self_signed("modern merchant");
    let p12 = modern(&merchant_store(&merchant));
    assert!(contains(&p12, OID_PBES2), "written with PBES2");
    assert_round_trip(&p12, &merchant);
}

#[test]
fn legacy_rc2_40_sha1_file_round_trips() {
    let merchant = self_signed("legacy merchant");
    let p12 = write(
        &merchant_store(&merchant),
        // p12-keystore's name for pbeWithSHAAnd40BitRC2-CBC (see its OID).
        EncryptionAlgorithm::PbeWithShaAnd40BitRc4Cbc,
        MacAlgorithm::HmacSha1,
    );
    assert!(contains(&p12, OID_PBE_SHA1_RC2_40), "written with RC2-40");
    assert!(!contains(&p12, OID_PBES2), "no PBES2 in a legacy file");
    assert_round_trip(&p12, &merchant);
}

#[test]
fn legacy_3des_sha1_file_round_trips() {
    let merchant = self_signed("legacy merchant");
    let p12 = write(
        &merchant_store(&merchant),
        EncryptionAlgorithm::PbeWithShaAnd3KeyTripleDesCbc,
        MacAlgorithm::HmacSha1,
    );
    assert!(contains(&p12, OID_PBE_SHA1_3DES), "written with 3DES");
    assert!(!contains(&p12, OID_PBES2), "no PBES2 in a legacy file");
    assert_round_trip(&p12, &merchant);
}

#[test]
fn openssl_legacy_file_gives_openssl_pem() {
    let p12 = openssl_legacy_p12();
    assert!(
        contains(&p12, OID_PBE_SHA1_RC2_40),
        "certificates in RC2-40"
    );
    assert!(contains(&p12, OID_PBE_SHA1_3DES), "key in 3DES");
    let pem = pem_identity_from_pkcs12(&p12, MCH_ID).expect("PEM identity");
    assert_eq!(std::str::from_utf8(&pem).ok(), Some(OPENSSL_PEM));
    let identity = reqwest_identity_from_pkcs12(&p12, MCH_ID).expect("identity");
    rustls_client(identity).expect("rustls accepts the identity");
}

#[test]
fn reqwest_identity_builds_a_rustls_client() {
    let merchant = self_signed("merchant");
    for p12 in [
        modern(&merchant_store(&merchant)),
        write(
            &merchant_store(&merchant),
            EncryptionAlgorithm::PbeWithShaAnd3KeyTripleDesCbc,
            MacAlgorithm::HmacSha1,
        ),
    ] {
        let identity = reqwest_identity_from_pkcs12(&p12, MCH_ID).expect("identity");
        rustls_client(identity).expect("rustls accepts the identity");
    }
}

#[test]
fn a_key_for_another_certificate_is_refused_by_rustls() {
    let merchant = self_signed("merchant");
    let stranger = self_signed("stranger");
    let mut store = KeyStore::new();
    store.add_entry(
        "merchant",
        key_chain(&stranger.key_der, &[&merchant.cert_der]),
    );
    let p12 = modern(&store);
    // The conversion does not judge the pair; rustls does, on build.
    let identity = reqwest_identity_from_pkcs12(&p12, MCH_ID).expect("identity");
    assert!(rustls_client(identity).is_err(), "mismatched key refused");
}

#[test]
fn chain_follows_the_end_entity_and_unrelated_certificates_are_left_out() {
    let root_key = KeyPair::generate().expect("root key");
    let root = CertifiedIssuer::self_signed(params("test root", true), root_key).expect("root");
    let intermediate_key = KeyPair::generate().expect("intermediate key");
    let intermediate =
        CertifiedIssuer::signed_by(params("test intermediate", true), intermediate_key, &root)
            .expect("intermediate");
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf = params("merchant", false)
        .signed_by(&leaf_key, &intermediate)
        .expect("leaf");
    let merchant = issued(&leaf, &leaf_key);
    let unrelated = self_signed("unrelated");

    // Standalone certificates are written before the key's chain, so the
    // file holds root, intermediate and the unrelated one before the leaf.
    let mut store = KeyStore::new();
    store.add_entry("a root", KeyStoreEntry::Certificate(cert(root.der())));
    store.add_entry(
        "b intermediate",
        KeyStoreEntry::Certificate(cert(intermediate.der())),
    );
    store.add_entry(
        "c unrelated",
        KeyStoreEntry::Certificate(cert(&unrelated.cert_der)),
    );
    store.add_entry(
        "merchant",
        key_chain(&merchant.key_der, &[&merchant.cert_der]),
    );

    for p12 in [
        modern(&store),
        write(
            &store,
            EncryptionAlgorithm::PbeWithShaAnd40BitRc4Cbc,
            MacAlgorithm::HmacSha1,
        ),
    ] {
        let pem = pem_identity_from_pkcs12(&p12, MCH_ID).expect("PEM identity");
        assert_eq!(
            blocks(&pem),
            vec![
                certificate(&merchant.cert_der),
                certificate(intermediate.der()),
                certificate(root.der()),
                private_key(&merchant.key_der),
            ]
        );
        assert_eq!(pem.capacity(), pem.len());
        let identity = reqwest_identity_from_pkcs12(&p12, MCH_ID).expect("identity");
        rustls_client(identity).expect("rustls accepts the chain");
    }
}

#[test]
fn wrong_password_names_the_rule_and_no_secret() {
    let merchant = self_signed("merchant");
    let store = merchant_store(&merchant);
    let files = [
        modern(&store),
        write(
            &store,
            EncryptionAlgorithm::PbeWithShaAnd40BitRc4Cbc,
            MacAlgorithm::HmacSha1,
        ),
        openssl_legacy_p12(),
    ];
    let key_b64 = STANDARD.encode(&merchant.key_der);
    let key_hex = hex::encode(&merchant.key_der);
    for p12 in &files {
        for password in [WRONG_PASSWORD, ""] {
            let e = pem_identity_from_pkcs12(p12, password).expect_err("wrong password");
            let text = format!("{e} {e:?}");
            assert_eq!(
                e.to_string(),
                format!("{PREFIX}wrong password or corrupt file")
            );
            if !password.is_empty() {
                assert!(!text.contains(password), "wrong password leaked: {text}");
            }
            assert!(!text.contains(MCH_ID), "right password leaked: {text}");
            assert!(!text.contains(&key_b64[..16]), "key leaked: {text}");
            assert!(!text.contains(&key_hex[..16]), "key leaked: {text}");
            assert!(!text.contains("PRIVATE KEY"), "key leaked: {text}");
        }
        assert_refused(
            reqwest_identity_from_pkcs12(p12, WRONG_PASSWORD).map(|_| ()),
            "wrong password or corrupt file",
        );
    }
}

#[test]
fn garbage_is_refused() {
    let merchant = self_signed("merchant");
    let p12 = modern(&merchant_store(&merchant));
    let truncated = &p12[..p12.len() / 2];
    let pem = format!("{}{}", merchant.cert_pem, merchant.key_pem);
    for garbage in [
        &b""[..],
        b"not a PKCS#12 file",
        &[0u8; 512],
        truncated,
        pem.as_bytes(),
    ] {
        assert_refused(
            pem_identity_from_pkcs12(garbage, MCH_ID),
            "not a PKCS#12 file, or a corrupt one",
        );
    }
    // A flipped byte inside the MAC-protected content.
    let mut tampered = p12.clone();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0x01;
    assert!(pem_identity_from_pkcs12(&tampered, MCH_ID).is_err());
}

#[test]
fn certificate_without_key_is_refused() {
    let merchant = self_signed("merchant");
    let mut store = KeyStore::new();
    store.add_entry(
        "merchant",
        KeyStoreEntry::Certificate(cert(&merchant.cert_der)),
    );
    for p12 in [
        modern(&store),
        write(
            &store,
            EncryptionAlgorithm::PbeWithShaAnd40BitRc4Cbc,
            MacAlgorithm::HmacSha1,
        ),
    ] {
        assert_refused(
            pem_identity_from_pkcs12(&p12, MCH_ID),
            "the file holds no private key",
        );
        assert_refused(
            reqwest_identity_from_pkcs12(&p12, MCH_ID).map(|_| ()),
            "the file holds no private key",
        );
    }
}

#[test]
fn two_private_keys_are_refused() {
    let first = self_signed("first");
    let second = self_signed("second");
    let mut store = KeyStore::new();
    store.add_entry("first", key_chain(&first.key_der, &[&first.cert_der]));
    store.add_entry("second", key_chain(&second.key_der, &[&second.cert_der]));
    assert_refused(
        pem_identity_from_pkcs12(&modern(&store), MCH_ID),
        "the file holds more than one private key",
    );
}

#[test]
fn key_without_certificate_is_refused() {
    let merchant = self_signed("merchant");
    let mut store = KeyStore::new();
    store.add_entry("merchant", key_chain(&merchant.key_der, &[]));
    assert_refused(
        pem_identity_from_pkcs12(&modern(&store), MCH_ID),
        "the file holds no certificate",
    );
}
