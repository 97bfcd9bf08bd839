//! The operator console's records: a small keyed document store beside the
//! payment tables.
//!
//! Why documents and not tables: the console owns their shape (a passkey
//! is webauthn-rs's own serialised credential, a ceremony its own state),
//! and the store only needs to keep them durably, expire them, and hand a
//! one-time record (an invite, a challenge) to exactly one taker.

/// Which kind of console record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConsoleKind {
    /// A one-time registration link, keyed by its token's SHA-256.
    Invite,
    /// An operator and their passkeys, keyed by operator id.
    Operator,
    /// A signed-in browser, keyed by its cookie's SHA-256.
    Session,
    /// A WebAuthn ceremony in flight, keyed by a random id.
    Ceremony,
}

impl ConsoleKind {
    /// The stored spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Invite => "invite",
            Self::Operator => "operator",
            Self::Session => "session",
            Self::Ceremony => "ceremony",
        }
    }
}

/// A record to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleRecord {
    /// Its kind.
    pub kind: ConsoleKind,
    /// Its key, unique within the kind.
    pub key: String,
    /// The document (JSON).
    pub value: String,
    /// After this instant (ms since the epoch) it is gone; never if `None`.
    pub expires_at_ms: Option<i64>,
}
