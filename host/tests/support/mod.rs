//! Helpers shared by the host's integration tests.

#![allow(dead_code, unreachable_pub)]

pub mod pki;
pub mod processes;
pub mod redis;

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;

use wxpay::key::ApiKey;
use wxpay::sandbox::bindings::types;

/// A key loaded the way operators load it: from an owner-only file.
pub fn key(value: &str) -> ApiKey {
    let file = key_file(value, 0o600);
    ApiKey::from_file(file.path()).expect("owner-only key file")
}

/// A temporary key file with the given permissions.
pub fn key_file(value: &str, mode: u32) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(value.as_bytes()).expect("write key");
    std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(mode)).expect("chmod");
    file
}

/// The WIT case name of a guest error, as the vector files spell it.
pub fn case_name(e: &types::Error) -> &'static str {
    use types::Error as E;
    match e {
        E::InvalidField(_) => "invalid-field",
        E::DuplicateField(_) => "duplicate-field",
        E::XmlRejected(_) => "xml-rejected",
        E::SignatureMissing => "signature-missing",
        E::SignatureMismatch(_) => "signature-mismatch",
        E::SignTypeMismatch(_) => "sign-type-mismatch",
        E::WrongMerchant(_) => "wrong-merchant",
        E::OrderMismatch(_) => "order-mismatch",
        E::AmountMismatch(_) => "amount-mismatch",
        E::ReturnFailed(_) => "return-failed",
        E::Wechat(_) => "wechat",
        E::DecryptFailed(_) => "decrypt-failed",
    }
}

/// One compiled component per test binary.
pub fn sandbox() -> &'static wxpay::sandbox::Sandbox {
    static SANDBOX: std::sync::OnceLock<wxpay::sandbox::Sandbox> = std::sync::OnceLock::new();
    SANDBOX.get_or_init(|| wxpay::sandbox::Sandbox::embedded().expect("embedded component loads"))
}
