//! What the store keeps: orders, refunds, raw notifications and audit
//! events, and the outcomes of writing them.
//!
//! States are spelled in lower case in storage (`as_str`); [`parse`]
//! functions read exactly those spellings back and nothing else.
//!
//! [`parse`]: OrderState::parse

use std::fmt;

use wxpay_guest::SignType;

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OrderState {
    /// Stored, not yet sent to WeChat (or the reply was not received).
    Created,
    /// WeChat accepted it and issued a code (`NOTPAY` at WeChat).
    Pending,
    /// WeChat says it is paid (`SUCCESS`).
    Paid,
    /// Closed before payment (`CLOSED`).
    Closed,
    /// WeChat refused it or the payment failed (`PAYERROR`).
    Failed,
    /// A refund was requested and has not settled.
    Refunding,
    /// Refunded, partially or fully (`REFUND`).
    Refunded,
    /// Reversed (`REVOKED`, micropay only).
    Reversed,
}

impl OrderState {
    /// Every state, in life order.
    pub const ALL: [Self; 8] = [
        Self::Created,
        Self::Pending,
        Self::Paid,
        Self::Closed,
        Self::Failed,
        Self::Refunding,
        Self::Refunded,
        Self::Reversed,
    ];

    /// The stored spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Pending => "pending",
            Self::Paid => "paid",
            Self::Closed => "closed",
            Self::Failed => "failed",
            Self::Refunding => "refunding",
            Self::Refunded => "refunded",
            Self::Reversed => "reversed",
        }
    }

    /// Reads the stored spelling, exactly.
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == value)
    }

    /// Whether money was received: paid, or paid and (being) refunded.
    pub const fn is_paid(self) -> bool {
        matches!(self, Self::Paid | Self::Refunding | Self::Refunded)
    }
}

impl fmt::Display for OrderState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a refund is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefundState {
    /// Stored, not yet accepted by WeChat.
    Requested,
    /// WeChat accepted it (`PROCESSING`).
    Processing,
    /// The money went back (`SUCCESS`).
    Succeeded,
    /// WeChat closed it without paying out (`REFUNDCLOSE`).
    Closed,
    /// WeChat refused it or it failed (`CHANGE`, a business error).
    Failed,
}

impl RefundState {
    /// Every state, in life order.
    pub const ALL: [Self; 5] = [
        Self::Requested,
        Self::Processing,
        Self::Succeeded,
        Self::Closed,
        Self::Failed,
    ];

    /// The stored spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "requested",
            Self::Processing => "processing",
            Self::Succeeded => "succeeded",
            Self::Closed => "closed",
            Self::Failed => "failed",
        }
    }

    /// Reads the stored spelling, exactly.
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == value)
    }

    /// Whether the refund did or still may move money; such refunds count
    /// against the order's amount.
    pub const fn counts_against_order(self) -> bool {
        matches!(self, Self::Requested | Self::Processing | Self::Succeeded)
    }
}

impl fmt::Display for RefundState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An order as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    /// The merchant's order number, unique (the primary key).
    pub out_trade_no: String,
    /// The merchant id it was placed with.
    pub mch_id: String,
    /// The app id it was placed with.
    pub appid: String,
    /// The catalog product, if any.
    pub product_id: Option<String>,
    /// How many of the product.
    pub quantity: u32,
    /// The amount in fen.
    pub total_fee: u64,
    /// The currency, `CNY`.
    pub fee_type: String,
    /// The algorithm its messages are signed with.
    pub sign_type: SignType,
    /// `NATIVE`, `JSAPI`, `MICROPAY`, …
    pub trade_type: String,
    /// Where it is.
    pub state: OrderState,
    /// WeChat's prepay id, once issued.
    pub prepay_id: Option<String>,
    /// The payment code URL (NATIVE), once issued.
    pub code_url: Option<String>,
    /// WeChat's transaction id, once paid.
    pub transaction_id: Option<String>,
    /// The agent's idempotency key; unique per agent when both are set.
    pub idempotency_key: Option<String>,
    /// The agent that placed it.
    pub agent_id: Option<String>,
    /// When it was stored (ms since the Unix epoch).
    pub created_at_ms: i64,
    /// When it last changed.
    pub updated_at_ms: i64,
    /// When it can no longer be paid.
    pub expires_at_ms: i64,
    /// When WeChat says it was paid.
    pub paid_at_ms: Option<i64>,
    /// Bumped by every applied change; 1 when inserted (the value given
    /// to an insert is ignored).
    pub version: u64,
}

impl Order {
    /// What a payment notification is checked against (never changed
    /// once the order is stored).
    pub fn terms(&self) -> OrderTerms {
        OrderTerms {
            total_fee: self.total_fee,
            fee_type: self.fee_type.clone(),
            sign_type: self.sign_type,
        }
    }
}

/// The terms of an order that a payment notification must match: its
/// amount, its currency and the algorithm its messages are signed with.
/// Fixed when the order is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderTerms {
    /// The amount in fen.
    pub total_fee: u64,
    /// The currency.
    pub fee_type: String,
    /// The algorithm.
    pub sign_type: SignType,
}

/// Fields a transition may set alongside the state. `None` leaves the
/// stored value as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderPatch {
    /// WeChat's prepay id.
    pub prepay_id: Option<String>,
    /// The payment code URL.
    pub code_url: Option<String>,
    /// WeChat's transaction id.
    pub transaction_id: Option<String>,
    /// When it was paid.
    pub paid_at_ms: Option<i64>,
}

/// A refund as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refund {
    /// The merchant's refund number, unique (the primary key).
    pub out_refund_no: String,
    /// The order refunded; it must exist.
    pub out_trade_no: String,
    /// The amount in fen.
    pub refund_fee: u64,
    /// Where it is.
    pub state: RefundState,
    /// WeChat's refund id, once accepted.
    pub refund_id: Option<String>,
    /// When it was stored.
    pub created_at_ms: i64,
    /// When it last changed.
    pub updated_at_ms: i64,
    /// Bumped by every applied change; 1 when inserted.
    pub version: u64,
}

/// Fields a refund transition may set alongside the state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefundPatch {
    /// WeChat's refund id.
    pub refund_id: Option<String>,
}

/// The outcome of inserting a record whose key may already be taken.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Inserted<T> {
    /// It was stored.
    New,
    /// A record with the same key was already there, and is returned
    /// unchanged; nothing was written. For orders, the key is
    /// `out_trade_no`, or `(agent_id, idempotency_key)` when both are set.
    Exists(T),
}

/// The outcome of inserting a refund.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum RefundInsert {
    /// It was stored.
    New,
    /// A refund with the same `out_refund_no` was already there, returned
    /// unchanged; nothing was written.
    Exists(Refund),
    /// The order it refunds is not stored.
    OrderMissing,
    /// It would take the refunds counting against the order (see
    /// [`RefundState::counts_against_order`]) past the order's amount.
    /// Checked in the same transaction as the insert, so two concurrent
    /// refunds cannot both pass.
    ExceedsOrder {
        /// The order's amount.
        total_fee: u64,
        /// What is already refunded or being refunded.
        refunded: u64,
    },
}

/// The outcome of a compare-and-set transition.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Transition<T = Order> {
    /// The record was in one of the `from` states; it is now in `to`, with
    /// the patch applied and its version bumped. Returned as it is now.
    Applied(T),
    /// It was already in `to`: an idempotent no-op, nothing changed (not
    /// even the patch). Returned as it is.
    AlreadyThere(T),
    /// It is in a state that is neither `to` nor one of `from`; nothing
    /// changed. Returned as it is.
    Refused(T),
    /// No such record.
    Missing,
}

impl<T> Transition<T> {
    /// The record, unless it is missing.
    pub fn record(&self) -> Option<&T> {
        match self {
            Self::Applied(r) | Self::AlreadyThere(r) | Self::Refused(r) => Some(r),
            Self::Missing => None,
        }
    }

    /// Whether this call changed the record.
    pub const fn applied(&self) -> bool {
        matches!(self, Self::Applied(_))
    }
}

/// What a notification was about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotificationKind {
    /// A payment result notification.
    Payment,
    /// A refund result notification (encrypted `req_info`).
    Refund,
}

impl NotificationKind {
    /// The stored spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Payment => "payment",
            Self::Refund => "refund",
        }
    }

    /// Reads the stored spelling, exactly.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "payment" => Some(Self::Payment),
            "refund" => Some(Self::Refund),
            _ => None,
        }
    }
}

/// What was decided about a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// It changed the order.
    Accepted,
    /// It repeated what was already applied.
    Duplicate,
    /// It was refused, for the reason given (no secrets, no body).
    Rejected(String),
}

impl Verdict {
    const REJECTED: &'static str = "rejected:";

    /// The stored spelling: `accepted`, `duplicate` or `rejected:<reason>`.
    pub fn to_stored(&self) -> String {
        match self {
            Self::Accepted => "accepted".to_owned(),
            Self::Duplicate => "duplicate".to_owned(),
            Self::Rejected(reason) => format!("{}{reason}", Self::REJECTED),
        }
    }

    /// Reads the stored spelling, exactly.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "accepted" => Some(Self::Accepted),
            "duplicate" => Some(Self::Duplicate),
            _ => value
                .strip_prefix(Self::REJECTED)
                .map(|reason| Self::Rejected(reason.to_owned())),
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_stored())
    }
}

/// A notification as received, with the verdict on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationRecord {
    /// Its number, increasing in the order they were recorded.
    pub id: i64,
    /// What it was about.
    pub kind: NotificationKind,
    /// When it was received.
    pub received_at_ms: i64,
    /// The raw body, byte for byte.
    pub body: Vec<u8>,
    /// What was decided.
    pub verdict: Verdict,
    /// The order it names, when it could be read.
    pub out_trade_no: Option<String>,
    /// What identifies repeats (e.g. the transaction id).
    pub dedupe_key: Option<String>,
}

/// A verified notification that an order was paid, as
/// [`Store::apply_paid_notification`](super::Store::apply_paid_notification)
/// records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaidNotification {
    /// The order.
    pub out_trade_no: String,
    /// WeChat's transaction id.
    pub transaction_id: String,
    /// When WeChat says it was paid.
    pub paid_at_ms: i64,
    /// The notification as received.
    pub body: Vec<u8>,
    /// When it was received.
    pub at_ms: i64,
    /// The terms the notification was checked against. Nothing is written
    /// unless the order has them: see [`PaymentApplied`].
    pub terms: OrderTerms,
    /// Appended when this notification paid the order.
    pub audit: Option<AuditEventInput>,
}

/// What [`Store::apply_paid_notification`](super::Store::apply_paid_notification)
/// did with a verified payment notification.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum PaymentApplied {
    /// The order has the terms the notification was checked against, or
    /// there is no such order: the transition to paid was tried, and the
    /// notification recorded with its verdict.
    Recorded(Transition<Order>),
    /// The order's terms are not those the notification was checked
    /// against: nothing was written. The order as it is, for the
    /// notification to be checked against it.
    TermsDiffer(Order),
}

/// An audit event to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEventInput {
    /// When it happened.
    pub at_ms: i64,
    /// Who did it: an agent id, `operator`, `wechat`, `reconciler`.
    pub actor: String,
    /// What was done, e.g. `order.create`.
    pub action: String,
    /// What it was done to, e.g. an `out_trade_no`.
    pub subject: String,
    /// How it ended, e.g. `ok`, `refused`.
    pub outcome: String,
    /// More, as a JSON document (checked). Never secrets.
    pub detail: String,
}

/// An audit event as stored. The log is append-only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// Its position in the log, strictly increasing.
    pub seq: i64,
    /// When it happened.
    pub at_ms: i64,
    /// Who did it.
    pub actor: String,
    /// What was done.
    pub action: String,
    /// What it was done to.
    pub subject: String,
    /// How it ended.
    pub outcome: String,
    /// More, as JSON.
    pub detail: String,
}
