//! Entry points for the fuzz targets in `fuzz/` that run the component
//! itself, in wasmtime, against the same core compiled natively.
//!
//! The guest's own fuzz targets test the protocol core natively; these
//! test the boundary: the canonical-ABI lifting and lowering of params,
//! strings and results, and the build of the component that ships. For
//! any input both must accept or both refuse, and agree on every byte
//! they produce. A panic here is the finding the fuzzer reports.
#![allow(clippy::panic)]

use std::io::Write as _;
use std::sync::{Mutex, OnceLock, PoisonError};

use wxpay_guest::packed;
use wxpay_guest::sign::{ApiKey as NativeKey, SignType as NativeSignType};

use crate::key::ApiKey;
use crate::sandbox::bindings::types::SignType;
use crate::sandbox::signer::{MerchantHandle, MerchantSettings, Pairs};
use crate::sandbox::{Sandbox, SandboxLimits, SignerInstance};

/// The key both sides sign with (the documentation's example key).
const FUZZ_KEY: &str = "192006250b4c09247ec02edce69f6a2d";

struct Component {
    signer: SignerInstance,
    merchant: MerchantHandle,
}

/// One instance for the whole run: instantiating per input would measure
/// wasmtime, not the boundary.
fn component() -> &'static Mutex<Component> {
    static COMPONENT: OnceLock<Mutex<Component>> = OnceLock::new();
    COMPONENT.get_or_init(|| {
        let sandbox =
            Sandbox::from_bytes(crate::sandbox::EMBEDDED_COMPONENT, SandboxLimits::default())
                .unwrap_or_else(|e| panic!("the embedded component loads: {e}"));
        let mut signer = sandbox
            .instantiate()
            .unwrap_or_else(|e| panic!("the component instantiates: {e}"));
        let settings = MerchantSettings {
            appid: "wxd930ea5d5a258f4f".into(),
            mch_id: "10000100".into(),
            sign_type: SignType::HmacSha256,
            sub_appid: None,
            sub_mch_id: None,
            sandbox: false,
        };
        let merchant = signer
            .merchant(&settings, &fuzz_key())
            .unwrap_or_else(|e| panic!("the fuzz merchant is valid: {e}"));
        Mutex::new(Component { signer, merchant })
    })
}

/// Compiles and instantiates the component before fuzzing starts, so the
/// first input is not charged the seconds that takes (under a sanitizer).
pub fn init_component() {
    let _ = component();
}

/// The key, loaded the only way the host loads keys: from an owner-only file.
fn fuzz_key() -> ApiKey {
    let mut file = tempfile::NamedTempFile::new().unwrap_or_else(|e| panic!("temp file: {e}"));
    file.write_all(FUZZ_KEY.as_bytes())
        .unwrap_or_else(|e| panic!("write the key: {e}"));
    ApiKey::from_file(file.path()).unwrap_or_else(|e| panic!("load the key: {e}"))
}

/// `k=v` lines, in the order given (the component must sort them itself).
fn lines(data: &[u8]) -> Option<Pairs> {
    let text = std::str::from_utf8(data).ok()?;
    Some(
        text.split('\n')
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    )
}

/// Canonicalization and both signatures, natively and through the
/// component: both refuse the same inputs and agree on every accepted one.
pub fn component_differential(data: &[u8]) {
    let Some(pairs) = lines(data) else {
        return;
    };
    let native = wxpay_guest::fuzzing::params_from_lines(data);
    let mut guard = component().lock().unwrap_or_else(PoisonError::into_inner);
    let Component { signer, merchant } = &mut *guard;
    if let Ok(text) = std::str::from_utf8(data) {
        assert_packed_signs_alike(signer, merchant, text);
    }
    let canonical = signer.canonicalize(&pairs);
    let Some(params) = native else {
        assert!(
            canonical.is_err(),
            "the component accepted what the native core refuses: {pairs:?}"
        );
        return;
    };
    let canonical = canonical
        .unwrap_or_else(|e| panic!("the component refused what the native core accepts: {e}"));
    assert_eq!(
        canonical,
        wxpay_guest::canonical::canonicalize(&params),
        "canonical strings differ"
    );
    let key = NativeKey::new(FUZZ_KEY.into()).unwrap_or_else(|_| panic!("the fuzz key is valid"));
    for (component_type, native_type) in [
        (SignType::Md5, NativeSignType::Md5),
        (SignType::HmacSha256, NativeSignType::HmacSha256),
    ] {
        let signed = signer
            .sign(merchant, &pairs, Some(component_type))
            .unwrap_or_else(|e| panic!("the component refused to sign accepted params: {e}"));
        assert_eq!(
            signed,
            wxpay_guest::sign::sign(&params, native_type, &key),
            "{native_type:?} signatures differ"
        );
    }
}

/// Any text as `sign-packed`'s fields: the component and the native core
/// both refuse it, or give the same signatures.
fn assert_packed_signs_alike(signer: &mut SignerInstance, merchant: &MerchantHandle, text: &str) {
    let key = NativeKey::new(FUZZ_KEY.into()).unwrap_or_else(|_| panic!("the fuzz key is valid"));
    for (component_type, native_type) in [
        (SignType::Md5, NativeSignType::Md5),
        (SignType::HmacSha256, NativeSignType::HmacSha256),
    ] {
        let component = signer.sign_packed(merchant, text, Some(component_type));
        match (component, packed::sign_packed(text, native_type, &key)) {
            (Ok(component), Ok(native)) => {
                assert_eq!(
                    component, native,
                    "{native_type:?} packed signatures differ"
                );
            }
            (Err(crate::Error::Guest(_)), Err(_)) => {}
            (component, native) => {
                panic!("packed fields {text:?}: component {component:?}, native {native:?}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::component_differential;

    #[test]
    fn the_differential_holds_on_the_seed_shapes() {
        for input in [
            &b"appid=wxd930ea5d5a258f4f\nmch_id=10000100\nbody=test\nnonce_str=ibuaiVcKdpRxkhJA"[..],
            b"b=2\na=1\nsign=XYZ\nempty=",
            b"dup=1\ndup=2",
            b"bad name=1",
            b"",
            "utf8=\u{4e2d}\u{6587}&=".as_bytes(),
            b"b=2\x00a=1\x00sign=XYZ",
            b"a=1\x00a=2",
            b"a=1\x00",
        ] {
            component_differential(input);
        }
    }
}
