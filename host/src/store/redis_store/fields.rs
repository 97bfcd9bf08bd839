//! What travels to and from the store function: arguments encoded as the
//! function reads them, and records (hashes as flat name/value arrays)
//! decoded into the store's types.
//!
//! Nothing here panics on what Redis returns: a value this build cannot
//! read is [`StoreError::Corrupt`], naming the record and field, never the
//! value.

use std::collections::HashMap;

use redis::Value;
use wxpay_guest::SignType;

use super::super::StoreResult;
use super::super::agents::{AgentRecord, Approval, ApprovalKind, ApprovalState};
use super::super::error::StoreError;
use super::super::ledger::LedgerEntry;
use super::super::meters::Meter;
use super::super::types::{
    AuditEvent, NotificationKind, NotificationRecord, Order, OrderState, Refund, RefundState,
    Verdict,
};

/// Amounts at or above 2^53 fen are refused: the function adds amounts in
/// Lua's doubles, which are exact only below that.
const LARGEST_AMOUNT: u64 = (1 << 53) - 1;

/// The function's arguments after the prefix and operation name.
#[derive(Debug, Default)]
pub(super) struct Args(pub(super) Vec<Vec<u8>>);

impl Args {
    pub(super) fn text(&mut self, value: &str) -> &mut Self {
        self.0.push(value.as_bytes().to_vec());
        self
    }

    pub(super) fn bytes(&mut self, value: &[u8]) -> &mut Self {
        self.0.push(value.to_vec());
        self
    }

    pub(super) fn int(&mut self, value: i64) -> &mut Self {
        self.text(&value.to_string())
    }

    /// An amount, refused when the function could not add it exactly.
    pub(super) fn amount(&mut self, value: u64, field: &'static str) -> StoreResult<&mut Self> {
        if value > LARGEST_AMOUNT {
            return Err(StoreError::AmountOutOfRange { field });
        }
        Ok(self.text(&value.to_string()))
    }

    /// An optional value: empty for none, `=` and the value for some.
    pub(super) fn opt(&mut self, value: Option<&str>) -> &mut Self {
        match value {
            None => self.0.push(Vec::new()),
            Some(v) => self.0.push([b"=", v.as_bytes()].concat()),
        }
        self
    }

    pub(super) fn opt_int(&mut self, value: Option<i64>) -> &mut Self {
        self.opt(value.map(|v| v.to_string()).as_deref())
    }

    /// A record field for `HSET`; none is simply left out.
    pub(super) fn field(&mut self, name: &str, value: Option<&str>) -> &mut Self {
        if let Some(value) = value {
            self.text(name).text(value);
        }
        self
    }

    pub(super) fn int_field(&mut self, name: &str, value: Option<i64>) -> &mut Self {
        self.field(name, value.map(|v| v.to_string()).as_deref())
    }

    /// A comma-separated set of state names.
    pub(super) fn states<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) -> &mut Self {
        let joined: Vec<&str> = names.into_iter().collect();
        self.text(&joined.join(","))
    }
}

/// The order's fields, as stored (`version` is set by the function).
pub(super) fn order_fields(args: &mut Args, o: &Order) -> StoreResult<()> {
    args.field("out_trade_no", Some(&o.out_trade_no))
        .field("mch_id", Some(&o.mch_id))
        .field("appid", Some(&o.appid))
        .field("product_id", o.product_id.as_deref())
        .int_field("quantity", Some(i64::from(o.quantity)));
    args.text("total_fee").amount(o.total_fee, "total_fee")?;
    args.field("fee_type", Some(&o.fee_type))
        .field("sign_type", Some(o.sign_type.as_str()))
        .field("trade_type", Some(&o.trade_type))
        .field("state", Some(o.state.as_str()))
        .field("prepay_id", o.prepay_id.as_deref())
        .field("code_url", o.code_url.as_deref())
        .field("transaction_id", o.transaction_id.as_deref())
        .field("idempotency_key", o.idempotency_key.as_deref())
        .field("agent_id", o.agent_id.as_deref())
        .int_field("created_at_ms", Some(o.created_at_ms))
        .int_field("updated_at_ms", Some(o.updated_at_ms))
        .int_field("expires_at_ms", Some(o.expires_at_ms))
        .int_field("paid_at_ms", o.paid_at_ms);
    Ok(())
}

/// The refund's fields, as stored.
pub(super) fn refund_fields(args: &mut Args, r: &Refund) -> StoreResult<()> {
    args.field("out_refund_no", Some(&r.out_refund_no))
        .field("out_trade_no", Some(&r.out_trade_no));
    args.text("refund_fee").amount(r.refund_fee, "refund_fee")?;
    args.field("state", Some(r.state.as_str()))
        .field("refund_id", r.refund_id.as_deref())
        .int_field("created_at_ms", Some(r.created_at_ms))
        .int_field("updated_at_ms", Some(r.updated_at_ms));
    Ok(())
}

/// A record read back: its fields by name.
#[derive(Debug)]
pub(super) struct Fields {
    what: &'static str,
    values: HashMap<String, Vec<u8>>,
}

impl Fields {
    /// A record the function returned, or `None` for its `false` (no record).
    pub(super) fn from_value(value: &Value, what: &'static str) -> StoreResult<Option<Self>> {
        match value {
            Value::Nil => Ok(None),
            Value::Array(items) => {
                let mut values = HashMap::with_capacity(items.len() / 2);
                for pair in items.chunks(2) {
                    let [name, value] = pair else {
                        return Err(StoreError::corrupt(what, "a field has no value"));
                    };
                    let name = String::from_utf8(bulk(name, what)?.to_vec())
                        .map_err(|_| StoreError::corrupt(what, "a field name is not UTF-8"))?;
                    values.insert(name, bulk(value, what)?.to_vec());
                }
                Ok(Some(Self { what, values }))
            }
            _ => Err(StoreError::corrupt(what, "not a record")),
        }
    }

    /// Like [`Fields::from_value`], for a record that must be there.
    pub(super) fn required(value: &Value, what: &'static str) -> StoreResult<Self> {
        Self::from_value(value, what)?.ok_or_else(|| StoreError::corrupt(what, "missing"))
    }

    fn corrupt(&self, field: &str, detail: &str) -> StoreError {
        StoreError::corrupt(format!("{}.{field}", self.what), detail)
    }

    pub(super) fn bytes(&self, name: &str) -> StoreResult<Vec<u8>> {
        self.values
            .get(name)
            .cloned()
            .ok_or_else(|| self.corrupt(name, "missing"))
    }

    pub(super) fn opt_text(&self, name: &str) -> StoreResult<Option<String>> {
        self.values
            .get(name)
            .map(|v| String::from_utf8(v.clone()).map_err(|_| self.corrupt(name, "not UTF-8")))
            .transpose()
    }

    pub(super) fn text(&self, name: &str) -> StoreResult<String> {
        self.opt_text(name)?
            .ok_or_else(|| self.corrupt(name, "missing"))
    }

    pub(super) fn opt_int(&self, name: &str) -> StoreResult<Option<i64>> {
        self.opt_text(name)?
            .map(|v| v.parse().map_err(|_| self.corrupt(name, "not an integer")))
            .transpose()
    }

    pub(super) fn int(&self, name: &str) -> StoreResult<i64> {
        self.opt_int(name)?
            .ok_or_else(|| self.corrupt(name, "missing"))
    }

    pub(super) fn uint<T: TryFrom<i64>>(&self, name: &str) -> StoreResult<T> {
        T::try_from(self.int(name)?).map_err(|_| self.corrupt(name, "out of range"))
    }

    fn parsed<T>(&self, name: &str, parse: impl Fn(&str) -> Option<T>) -> StoreResult<T> {
        let value = self.text(name)?;
        parse(&value).ok_or_else(|| self.corrupt(name, "unknown value"))
    }
}

/// A binary-safe string the function returned.
pub(super) fn bulk<'v>(value: &'v Value, what: &'static str) -> StoreResult<&'v [u8]> {
    match value {
        Value::BulkString(bytes) => Ok(bytes),
        Value::SimpleString(text) => Ok(text.as_bytes()),
        _ => Err(StoreError::corrupt(what, "not a string")),
    }
}

/// An integer the function returned, as a number or a decimal string.
pub(super) fn integer(value: &Value, what: &'static str) -> StoreResult<i64> {
    match value {
        Value::Int(n) => Ok(*n),
        other => std::str::from_utf8(bulk(other, what)?)
            .ok()
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| StoreError::corrupt(what, "not an integer")),
    }
}

/// An amount the function returned.
pub(super) fn amount(value: &Value, what: &'static str) -> StoreResult<u64> {
    u64::try_from(integer(value, what)?).map_err(|_| StoreError::corrupt(what, "out of range"))
}

pub(super) fn order(f: &Fields) -> StoreResult<Order> {
    Ok(Order {
        out_trade_no: f.text("out_trade_no")?,
        mch_id: f.text("mch_id")?,
        appid: f.text("appid")?,
        product_id: f.opt_text("product_id")?,
        quantity: f.uint("quantity")?,
        total_fee: f.uint("total_fee")?,
        fee_type: f.text("fee_type")?,
        sign_type: f.parsed("sign_type", SignType::from_wire)?,
        trade_type: f.text("trade_type")?,
        state: f.parsed("state", OrderState::parse)?,
        prepay_id: f.opt_text("prepay_id")?,
        code_url: f.opt_text("code_url")?,
        transaction_id: f.opt_text("transaction_id")?,
        idempotency_key: f.opt_text("idempotency_key")?,
        agent_id: f.opt_text("agent_id")?,
        created_at_ms: f.int("created_at_ms")?,
        updated_at_ms: f.int("updated_at_ms")?,
        expires_at_ms: f.int("expires_at_ms")?,
        paid_at_ms: f.opt_int("paid_at_ms")?,
        version: f.uint("version")?,
    })
}

pub(super) fn refund(f: &Fields) -> StoreResult<Refund> {
    Ok(Refund {
        out_refund_no: f.text("out_refund_no")?,
        out_trade_no: f.text("out_trade_no")?,
        refund_fee: f.uint("refund_fee")?,
        state: f.parsed("state", RefundState::parse)?,
        refund_id: f.opt_text("refund_id")?,
        created_at_ms: f.int("created_at_ms")?,
        updated_at_ms: f.int("updated_at_ms")?,
        version: f.uint("version")?,
    })
}

pub(super) fn notification(f: &Fields) -> StoreResult<NotificationRecord> {
    Ok(NotificationRecord {
        id: f.int("id")?,
        kind: f.parsed("kind", NotificationKind::parse)?,
        received_at_ms: f.int("received_at_ms")?,
        body: f.bytes("body")?,
        verdict: f.parsed("verdict", Verdict::parse)?,
        out_trade_no: f.opt_text("out_trade_no")?,
        dedupe_key: f.opt_text("dedupe_key")?,
    })
}

pub(super) fn audit_event(f: &Fields) -> StoreResult<AuditEvent> {
    Ok(AuditEvent {
        seq: f.int("seq")?,
        at_ms: f.int("at_ms")?,
        actor: f.text("actor")?,
        action: f.text("action")?,
        subject: f.text("subject")?,
        outcome: f.text("outcome")?,
        detail: f.text("detail")?,
    })
}

pub(super) fn agent(f: &Fields) -> StoreResult<AgentRecord> {
    Ok(AgentRecord {
        agent_id: f.text("agent_id")?,
        name: f.text("name")?,
        token_sha256: f.text("token_sha256")?,
        grant_json: f.text("grant_json")?,
        created_at_ms: f.int("created_at_ms")?,
        expires_at_ms: f.opt_int("expires_at_ms")?,
        revoked_at_ms: f.opt_int("revoked_at_ms")?,
    })
}

pub(super) fn approval(f: &Fields) -> StoreResult<Approval> {
    Ok(Approval {
        id: f.int("id")?,
        kind: f.parsed("kind", ApprovalKind::parse)?,
        subject: f.text("subject")?,
        agent_id: f.text("agent_id")?,
        amount_fen: f.uint("amount_fen")?,
        request_json: f.text("request_json")?,
        state: f.parsed("state", ApprovalState::parse)?,
        reason: f.opt_text("reason")?,
        decided_by: f.opt_text("decided_by")?,
        requested_at_ms: f.int("requested_at_ms")?,
        decided_at_ms: f.opt_int("decided_at_ms")?,
    })
}

pub(super) fn ledger_entry(f: &Fields) -> StoreResult<LedgerEntry> {
    Ok(LedgerEntry {
        seq: f.int("seq")?,
        payer_id: f.text("payer_id")?,
        amount_fen: f.int("amount_fen")?,
        kind: f.text("kind")?,
        reference: f.text("ref")?,
        agent_id: f.opt_text("agent_id")?,
        note: f.opt_text("note")?,
        at_ms: f.int("at_ms")?,
    })
}

pub(super) fn meter(f: &Fields) -> StoreResult<Meter> {
    Ok(Meter {
        meter_id: f.text("meter_id")?,
        agent_id: f.text("agent_id")?,
        payer_id: f.text("payer_id")?,
        out_trade_no: f.opt_text("out_trade_no")?,
        created_at_ms: f.int("created_at_ms")?,
        settled_at_ms: f.opt_int("settled_at_ms")?,
        total_fen: f.uint("total_fen")?,
    })
}
