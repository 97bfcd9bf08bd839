//! Prometheus metrics, served as text on `GET /metrics`.
//!
//! Why these: an operator needs to see at a glance whether money is moving
//! and whether anyone is knocking on the door. Notifications verified and
//! refused (by reason), how long WeChat waited for our answer, what WeChat
//! answered each endpoint (by `err_code`) and how often we retried, what
//! reconciliation found, which guardrails refused agents, and approvals.
//!
//! Labels are closed sets chosen here (a reason, an endpoint path, an
//! `err_code` WeChat documents), never values taken from a request, so a
//! hostile caller cannot grow the series without bound; an unexpected
//! `err_code` is counted as `other`. Nothing here can hold a key, a token
//! or a payer's data.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::sandbox::bindings::types;

/// A notification's kind and what became of it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NotificationLabels {
    kind: &'static str,
    verdict: &'static str,
    reason: &'static str,
}

/// How long one callback took, by kind and answer.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallbackLabels {
    kind: &'static str,
    answer: &'static str,
}

/// One WeChat endpoint and what it answered.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WechatLabels {
    endpoint: String,
    err_code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApprovalLabels {
    kind: &'static str,
    decision: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric the gateway keeps. Cheap to clone; clones share the counts.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    notifications: Family<NotificationLabels, Counter>,
    callbacks: Histograms<CallbackLabels>,
    wechat_calls: Family<WechatLabels, Counter>,
    wechat_retries: Family<EndpointLabels, Counter>,
    reconciliation: Family<ResultLabels, Counter>,
    guardrail_refusals: Family<ReasonLabels, Counter>,
    approvals: Family<ApprovalLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn latency_histogram() -> Histogram {
    // 100 µs to about 6.5 s, doubling: WeChat gives up after 5 s.
    Histogram::new(exponential_buckets(0.000_1, 2.0, 17))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("wxpay");
        let notifications = Family::default();
        registry.register(
            "notifications",
            "Payment and refund notifications received, by verdict and reason",
            notifications.clone(),
        );
        let callbacks: Histograms<CallbackLabels> =
            Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "callback_duration_seconds",
            "Time from a notification's arrival to our answer, by kind and answer",
            callbacks.clone(),
        );
        let wechat_calls = Family::default();
        registry.register(
            "wechat_calls",
            "Requests to WeChat Pay, by endpoint and the err_code answered (SUCCESS when none)",
            wechat_calls.clone(),
        );
        let wechat_retries = Family::default();
        registry.register(
            "wechat_retries",
            "Requests to WeChat Pay sent again after a transport failure or a retryable answer",
            wechat_retries.clone(),
        );
        let reconciliation = Family::default();
        registry.register(
            "reconciliation",
            "What reconciliation passes found and did, by result",
            reconciliation.clone(),
        );
        let guardrail_refusals = Family::default();
        registry.register(
            "guardrail_refusals",
            "Agent requests refused before any money moved, by reason",
            guardrail_refusals.clone(),
        );
        let approvals = Family::default();
        registry.register(
            "approvals",
            "Human approvals requested and decided, by kind and decision",
            approvals.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                registry,
                notifications,
                callbacks,
                wechat_calls,
                wechat_retries,
                reconciliation,
                guardrail_refusals,
                approvals,
            }),
        }
    }
}

impl Metrics {
    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.inner.registry);
        text
    }

    /// A notification of `kind` (`payment`, `refund`) ended with `verdict`
    /// (`accepted`, `duplicate`, `rejected`), refused for `reason`.
    pub fn notification(&self, kind: &'static str, verdict: &'static str, reason: &'static str) {
        let labels = NotificationLabels {
            kind,
            verdict,
            reason,
        };
        self.inner.notifications.get_or_create(&labels).inc();
    }

    /// A callback of `kind` answered with `answer` (`ack`, `refused`,
    /// `error`, `timeout`) after `elapsed`.
    pub fn callback(&self, kind: &'static str, answer: &'static str, elapsed: Duration) {
        let labels = CallbackLabels { kind, answer };
        self.inner
            .callbacks
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// WeChat answered `endpoint` with `err_code` (`SUCCESS`, a documented
    /// code, `transport` or `invalid_reply`).
    pub fn wechat_call(&self, endpoint: &str, err_code: &str) {
        let labels = WechatLabels {
            endpoint: endpoint_label(endpoint),
            err_code: err_code_label(err_code),
        };
        self.inner.wechat_calls.get_or_create(&labels).inc();
    }

    /// A request to `endpoint` is being sent again.
    pub fn wechat_retry(&self, endpoint: &str) {
        let labels = EndpointLabels {
            endpoint: endpoint_label(endpoint),
        };
        self.inner.wechat_retries.get_or_create(&labels).inc();
    }

    /// A reconciliation pass found or did `count` of `result`.
    pub fn reconciliation(&self, result: &'static str, count: usize) {
        let labels = ResultLabels { result };
        self.inner
            .reconciliation
            .get_or_create(&labels)
            .inc_by(u64::try_from(count).unwrap_or(u64::MAX));
    }

    /// An agent was refused for `reason` (the agent error's code).
    pub fn guardrail_refusal(&self, reason: &'static str) {
        let labels = ReasonLabels { reason };
        self.inner.guardrail_refusals.get_or_create(&labels).inc();
    }

    /// An approval of `kind` was `requested`, `approved` or `denied`, or an
    /// approval without a passkey was refused (`needs_passkey`).
    pub fn approval(&self, kind: &'static str, decision: &'static str) {
        let labels = ApprovalLabels { kind, decision };
        self.inner.approvals.get_or_create(&labels).inc();
    }
}

/// The reason a notification was refused, as a label.
pub fn rejection_reason(error: &crate::error::Error) -> &'static str {
    use crate::error::Error;
    match error {
        Error::Guest(e) => match e {
            types::Error::XmlRejected(_) => "malformed",
            types::Error::InvalidField(_) | types::Error::DuplicateField(_) => "invalid_field",
            types::Error::SignatureMissing | types::Error::SignatureMismatch(_) => "signature",
            types::Error::SignTypeMismatch(_) => "sign_type",
            types::Error::WrongMerchant(_) => "wrong_merchant",
            types::Error::OrderMismatch(_) | types::Error::AmountMismatch(_) => "order_mismatch",
            types::Error::ReturnFailed(_) => "return_code_fail",
            _ => "other",
        },
        Error::Trap(_) => "component_trap",
        _ => "other",
    }
}

/// The API paths WeChat Pay v2 serves, which are the only endpoint labels.
const ENDPOINTS: &[&str] = &[
    "/pay/unifiedorder",
    "/pay/orderquery",
    "/pay/closeorder",
    "/pay/micropay",
    "/pay/refundquery",
    "/pay/downloadbill",
    "/secapi/pay/refund",
    "/secapi/pay/reverse",
    "/pay/getsignkey",
];

/// `path` without the sandbox prefix, if it is a known endpoint; else `other`.
fn endpoint_label(path: &str) -> String {
    let path = path.strip_prefix("/sandboxnew").unwrap_or(path);
    if ENDPOINTS.contains(&path) {
        path.to_owned()
    } else {
        "other".to_owned()
    }
}

/// WeChat's codes are upper-case words; anything else is `other`.
fn err_code_label(code: &str) -> String {
    let documented = !code.is_empty()
        && code.len() <= 32
        && code
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    if documented || code == "transport" || code == "invalid_reply" {
        code.to_owned()
    } else {
        "other".to_owned()
    }
}

/// `GET /metrics`, for the operator's (private) listener: WeChat has no
/// business reading it.
pub fn router(gateway: Arc<crate::gateway::Gateway>) -> axum::Router {
    use axum::extract::State;
    use axum::http::header;
    axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(
                |State(gateway): State<Arc<crate::gateway::Gateway>>| async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        gateway.metrics().render(),
                    )
                },
            ),
        )
        .with_state(gateway)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Metrics, endpoint_label, err_code_label};

    #[test]
    fn labels_are_closed_sets() {
        assert_eq!(endpoint_label("/pay/unifiedorder"), "/pay/unifiedorder");
        assert_eq!(
            endpoint_label("/sandboxnew/pay/orderquery"),
            "/pay/orderquery"
        );
        assert_eq!(endpoint_label("/../../etc/passwd"), "other");
        assert_eq!(err_code_label("ORDERPAID"), "ORDERPAID");
        assert_eq!(err_code_label("transport"), "transport");
        assert_eq!(err_code_label("<script>"), "other");
        assert_eq!(err_code_label(&"A".repeat(33)), "other");
    }

    #[test]
    fn the_exposition_names_every_family_with_its_labels() {
        let metrics = Metrics::default();
        metrics.notification("payment", "rejected", "signature");
        metrics.callback("payment", "ack", Duration::from_millis(3));
        metrics.wechat_call("/pay/unifiedorder", "SUCCESS");
        metrics.wechat_retry("/pay/orderquery");
        metrics.reconciliation("orders_checked", 2);
        metrics.guardrail_refusal("over_budget");
        metrics.approval("payment", "approved");
        let text = metrics.render();
        for line in [
            "wxpay_notifications_total{kind=\"payment\",verdict=\"rejected\",reason=\"signature\"} 1",
            "wxpay_callback_duration_seconds_count{kind=\"payment\",answer=\"ack\"} 1",
            "wxpay_wechat_calls_total{endpoint=\"/pay/unifiedorder\",err_code=\"SUCCESS\"} 1",
            "wxpay_wechat_retries_total{endpoint=\"/pay/orderquery\"} 1",
            "wxpay_reconciliation_total{result=\"orders_checked\"} 2",
            "wxpay_guardrail_refusals_total{reason=\"over_budget\"} 1",
            "wxpay_approvals_total{kind=\"payment\",decision=\"approved\"} 1",
        ] {
            assert!(text.contains(line), "no {line:?} in:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
