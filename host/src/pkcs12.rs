//! The merchant's client certificate in PKCS#12 form.
//!
//! WeChat Pay gives each merchant its API client certificate as
//! `apiclient_cert.p12`, protected by a password that defaults to the
//! merchant id (`mch_id`). Files issued over the years use the legacy
//! PKCS#12 password-based encryption — RC2-40 or 3DES keyed with SHA-1, and a
//! SHA-1 MAC — so those are read, as are modern PBES2/AES files.
//!
//! reqwest built with rustls takes a client identity only as PEM
//! ([`reqwest::Identity::from_pem`]), so the file is converted to PEM in
//! memory: nothing is written to disk.
//!
//! Key material: the PEM text, and every buffer this module fills with the
//! private key, is held in [`Zeroizing`] and wiped when dropped; the output
//! buffer is sized up front so that growing it never leaves a copy behind.
//! The decoding library (`p12-keystore`) does not wipe its own copy of the
//! decrypted key; that copy is dropped as soon as the PEM text is built.
//! Errors name the rule that failed, never the password or key bytes.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use p12_keystore::error::Error as P12Error;
use p12_keystore::{Certificate, CertificateBag, Pkcs12Archive, PrivateKeyBag};
use zeroize::Zeroizing;

use crate::Error;

/// The input named in errors.
const WHAT: &str = "client certificate (PKCS#12)";
/// Bytes of DER per PEM line: 48 bytes are 64 base64 characters.
const LINE_BYTES: usize = 48;
/// Characters per PEM line.
const LINE_CHARS: usize = 64;
const CERTIFICATE: &str = "CERTIFICATE";
const PRIVATE_KEY: &str = "PRIVATE KEY";

/// Converts a PKCS#12 file (`apiclient_cert.p12`) to a PEM identity.
///
/// The PEM text holds the end-entity certificate first, then the
/// certificates that issued it as far as the file holds them (from the
/// end-entity towards the root), then the private key as PKCS#8
/// (`-----BEGIN PRIVATE KEY-----`). Lines are 64 characters, ending in `\n`.
///
/// The file must hold exactly one private key. Its certificate is the one
/// with the key's `localKeyId`, or the file's only certificate; other
/// certificates that are not in its issuer chain are left out. Whether the
/// key matches the certificate is checked by rustls when the identity is
/// given to a client (see [`reqwest_identity_from_pkcs12`]).
///
/// # Errors
///
/// [`Error::Input`] when the password is wrong, the file is not PKCS#12 or
/// is corrupt, uses an unsupported algorithm, or does not hold exactly one
/// private key with a certificate.
pub fn pem_identity_from_pkcs12(der: &[u8], password: &str) -> Result<Zeroizing<Vec<u8>>, Error> {
    let archive = Pkcs12Archive::from_pkcs12(der, password).map_err(decode_error)?;
    let key = only_key(&archive.keys)?;
    let leaf = end_entity(&archive.certs, key)?;
    let mut certs = vec![leaf];
    certs.extend(issuers(&archive.certs, leaf));
    encode_pem(&certs, key.key.as_der())
}

/// Converts a PKCS#12 file to a [`reqwest::Identity`] for a rustls client,
/// through [`pem_identity_from_pkcs12`].
///
/// # Errors
///
/// Those of [`pem_identity_from_pkcs12`], and [`Error::Input`] when reqwest
/// cannot read the PEM identity. A key that does not match the certificate
/// is reported when the client is built.
pub fn reqwest_identity_from_pkcs12(
    der: &[u8],
    password: &str,
) -> Result<reqwest::Identity, Error> {
    let pem = pem_identity_from_pkcs12(der, password)?;
    reqwest::Identity::from_pem(&pem).map_err(|e| Error::input(WHAT, e))
}

/// A sentence for a decoding failure. The library's own message is not
/// passed on: it is free text this module cannot vouch for.
fn decode_error(e: P12Error) -> Error {
    let reason = match e {
        P12Error::MacError(_)
        | P12Error::UnpadError
        | P12Error::Pkcs5Error(_)
        | P12Error::InvalidPrivateKey => "wrong password or corrupt file",
        P12Error::UnsupportedEncryptionScheme | P12Error::UnsupportedMacAlgorithm => {
            "the file uses an unsupported encryption or MAC algorithm"
        }
        P12Error::UnsupportedCertificateType => "the file holds a certificate that is not X.509",
        _ => "not a PKCS#12 file, or a corrupt one",
    };
    Error::input(WHAT, reason)
}

/// The file's one private key.
fn only_key(keys: &[PrivateKeyBag]) -> Result<&PrivateKeyBag, Error> {
    match keys {
        [key] => Ok(key),
        [] => Err(Error::input(WHAT, "the file holds no private key")),
        _ => Err(Error::input(
            WHAT,
            "the file holds more than one private key",
        )),
    }
}

/// The certificate of `key`: the one sharing its `localKeyId`, or else the
/// file's only certificate.
fn end_entity<'a>(
    certs: &'a [CertificateBag],
    key: &PrivateKeyBag,
) -> Result<&'a Certificate, Error> {
    if let Some(id) = &key.local_key_id
        && let Some(bag) = certs
            .iter()
            .find(|bag| bag.local_key_id.as_deref() == Some(id.as_ref()))
    {
        return Ok(&bag.cert);
    }
    match certs {
        [only] => Ok(&only.cert),
        [] => Err(Error::input(WHAT, "the file holds no certificate")),
        _ => Err(Error::input(
            WHAT,
            "no certificate in the file is marked (localKeyId) as the private key's",
        )),
    }
}

/// The issuers of `leaf` found in `certs`, from `leaf`'s issuer towards the
/// root; each certificate at most once, so a cycle ends the walk.
fn issuers<'a>(certs: &'a [CertificateBag], leaf: &'a Certificate) -> Vec<&'a Certificate> {
    let mut chain: Vec<&Certificate> = Vec::new();
    let mut current = leaf;
    while current.issuer() != current.subject() {
        let seen = |c: &Certificate| {
            c.as_der() == leaf.as_der() || chain.iter().any(|d| d.as_der() == c.as_der())
        };
        let next = certs
            .iter()
            .map(|bag| &bag.cert)
            .find(|c| c.subject() == current.issuer() && !seen(c));
        let Some(next) = next else { break };
        chain.push(next);
        current = next;
    }
    chain
}

/// The PEM text: each certificate, then the key.
fn encode_pem(certs: &[&Certificate], key_der: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
    let blocks = || {
        certs
            .iter()
            .map(|c| (CERTIFICATE, c.as_der()))
            .chain(std::iter::once((PRIVATE_KEY, key_der)))
    };
    let len = blocks()
        .map(|(label, der)| block_len(label, der.len()))
        .sum();
    // Sized once: a Vec that grows copies its bytes and frees the old buffer
    // without wiping it.
    let mut out = Zeroizing::new(Vec::with_capacity(len));
    for (label, der) in blocks() {
        write_block(&mut out, label, der)?;
    }
    Ok(out)
}

/// The length of one PEM block of `der_len` bytes.
fn block_len(label: &str, der_len: usize) -> usize {
    let begin = "-----BEGIN -----\n".len() + label.len();
    let end = "-----END -----\n".len() + label.len();
    let base64 = der_len.div_ceil(3) * 4;
    let newlines = der_len.div_ceil(LINE_BYTES);
    begin + base64 + newlines + end
}

/// Appends one PEM block: header, base64 lines of 64 characters, footer.
fn write_block(out: &mut Vec<u8>, label: &str, der: &[u8]) -> Result<(), Error> {
    out.extend_from_slice(b"-----BEGIN ");
    out.extend_from_slice(label.as_bytes());
    out.extend_from_slice(b"-----\n");
    let mut line = Zeroizing::new([0u8; LINE_CHARS]);
    for chunk in der.chunks(LINE_BYTES) {
        // 48 bytes always fit in 64 characters; the error is not expected.
        let written = STANDARD
            .encode_slice(chunk, line.as_mut_slice())
            .map_err(|_| Error::input(WHAT, "could not be written as PEM"))?;
        out.extend(line.iter().take(written));
        out.push(b'\n');
    }
    out.extend_from_slice(b"-----END ");
    out.extend_from_slice(label.as_bytes());
    out.extend_from_slice(b"-----\n");
    Ok(())
}
