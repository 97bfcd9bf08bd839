//! Key custody on the host side.
//!
//! The key is read from a file that only its owner can read, or from an
//! environment variable — never from a command-line argument, which other
//! users can see in the process list. It is held in a zeroizing buffer,
//! handed to the component once, and never formatted: its `Debug` prints
//! `<redacted>` and no error carries it.

use std::fmt;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::error::Error;

/// The environment variable read when no key source is given.
pub const DEFAULT_KEY_ENV: &str = "WXPAY_API_KEY";

/// Where the key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A file readable by its owner only (mode 0600 or stricter on Unix).
    File(PathBuf),
    /// An environment variable.
    Env(String),
}

/// The merchant's APIv2 key, on the host side.
pub struct ApiKey(Zeroizing<String>);

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl ApiKey {
    /// Loads the key from its source.
    pub fn load(source: &KeySource) -> Result<Self, Error> {
        match source {
            KeySource::File(path) => Self::from_file(path),
            KeySource::Env(var) => Self::from_env(var),
        }
    }

    /// Reads a key file, refusing one that group or others may read. One
    /// trailing line ending (as editors write) is not part of the key.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let key_file = |reason: String| Error::KeyFile {
            path: path.to_path_buf(),
            reason,
        };
        let metadata = std::fs::metadata(path).map_err(|e| key_file(e.kind().to_string()))?;
        check_permissions(path, &metadata)?;
        let raw = Zeroizing::new(std::fs::read(path).map_err(|e| key_file(e.kind().to_string()))?);
        let text =
            std::str::from_utf8(&raw).map_err(|_| key_file("the key is not UTF-8".into()))?;
        let text = text
            .strip_suffix("\r\n")
            .or_else(|| text.strip_suffix('\n'))
            .unwrap_or(text);
        Self::checked(Zeroizing::new(text.to_owned()), || {
            key_file("the file holds an empty key".into())
        })
    }

    /// Reads the key from an environment variable.
    pub fn from_env(var: &str) -> Result<Self, Error> {
        let value = std::env::var(var).map_err(|_| Error::KeyEnv {
            var: var.to_owned(),
        })?;
        Self::checked(Zeroizing::new(value), || Error::KeyEnv {
            var: var.to_owned(),
        })
    }

    fn checked(key: Zeroizing<String>, empty: impl FnOnce() -> Error) -> Result<Self, Error> {
        if key.is_empty() {
            Err(empty())
        } else {
            Ok(Self(key))
        }
    }

    /// A key that came over the wire (the sandbox key from getsignkey).
    #[cfg(feature = "gateway")]
    pub(crate) fn from_secret(key: Zeroizing<String>) -> Result<Self, Error> {
        Self::checked(key, || {
            Error::input("sandbox key", "WeChat returned an empty key")
        })
    }

    /// The key, for handing to the component. Crate-private on purpose.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// Warnings about a key that is probably wrong, without revealing it.
    pub fn self_check(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.0.len() != 32 {
            warnings.push(format!(
                "the key is {} characters long; WeChat Pay APIv2 keys are 32 (is this the AppSecret or the APIv3 key?)",
                self.0.chars().count()
            ));
        }
        if !self.0.bytes().all(|b| b.is_ascii_alphanumeric()) {
            warnings.push("the key holds characters other than letters and digits".to_owned());
        }
        warnings
    }
}

#[cfg(unix)]
fn check_permissions(path: &Path, metadata: &std::fs::Metadata) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::KeyPermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_permissions(_path: &Path, _metadata: &std::fs::Metadata) -> Result<(), Error> {
    Ok(())
}
