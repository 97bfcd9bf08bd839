//! Scenarios: what goes wrong, on purpose.
//!
//! WeChat's own sandbox chooses its acceptance cases by amount (1.01 yuan
//! for the normal case, and so on). The simulator does the same, so a
//! merchant can reproduce every failure without touching the simulator,
//! and the admin API can set a scenario for any order number in advance.

use serde::{Deserialize, Serialize};

/// One behaviour of the simulated WeChat for an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Scenario {
    /// Everything as in production.
    Normal,
    /// The payment notification is delivered again after it was acknowledged.
    DuplicateNotification,
    /// Two copies of the payment notification arrive at the same time.
    ConcurrentDuplicate,
    /// The first notification is sent 10 simulated minutes after payment.
    LateNotification,
    /// No notification at all: the merchant must query.
    NoNotification,
    /// A notification signed with the wrong key comes first.
    ForgedSignature,
    /// A notification without `sign` comes first.
    MissingSign,
    /// A notification whose total_fee was changed after signing comes first.
    TamperedTotalFee,
    /// A correctly signed notification for another appid comes first.
    WrongAppid,
    /// The first unifiedorder answers SYSTEMERROR; the retry succeeds.
    SystemErrorThenSuccess,
    /// The first unifiedorder reply is held past the client's timeout.
    Timeout,
    /// The first unifiedorder reply is an HTML error page (HTTP 502).
    HtmlErrorPage,
    /// The first refund request is refused with FREQUENCY_LIMITED (not accepted).
    FrequencyLimitedRefund,
}

/// The amounts (fen) that pick a scenario; any other amount is `Normal`.
pub const BY_AMOUNT: &[(u64, Scenario)] = &[
    (101, Scenario::Normal),
    (102, Scenario::DuplicateNotification),
    (103, Scenario::ConcurrentDuplicate),
    (104, Scenario::LateNotification),
    (105, Scenario::NoNotification),
    (106, Scenario::ForgedSignature),
    (107, Scenario::MissingSign),
    (108, Scenario::TamperedTotalFee),
    (109, Scenario::WrongAppid),
    (110, Scenario::SystemErrorThenSuccess),
    (111, Scenario::Timeout),
    (112, Scenario::HtmlErrorPage),
    (113, Scenario::FrequencyLimitedRefund),
];

impl Scenario {
    /// The scenario an amount picks.
    pub fn for_amount(total_fee: u64) -> Self {
        BY_AMOUNT
            .iter()
            .find(|(amount, _)| *amount == total_fee)
            .map_or(Self::Normal, |(_, s)| *s)
    }

    /// Whether the first unifiedorder reply fails on purpose.
    pub fn fails_first_order(self) -> bool {
        matches!(
            self,
            Self::SystemErrorThenSuccess | Self::Timeout | Self::HtmlErrorPage
        )
    }
}
