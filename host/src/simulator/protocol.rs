//! Request intake in WeChat's order, and WeChat's two kinds of reply.
//!
//! 1. method POST, else `REQUIRE_POST_METHOD`
//! 2. a body, else `POST_DATA_EMPTY`
//! 3. UTF-8, else `NOT_UTF8`
//! 4. flat XML without DOCTYPE, else `XML_FORMAT_ERROR`
//! 5. a known mch_id and a valid signature (algorithm from the request's
//!    `sign_type`; the sandbox key under `/sandboxnew/`), else the unsigned
//!    `return_code=FAIL` reply WeChat gives
//! 6. business rules, answered `result_code=FAIL` with an err_code, signed
//!    like every `return_code=SUCCESS` reply, with the request's algorithm
//!    and a fresh nonce.

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use rand::Rng as _;
use rand::distr::Alphanumeric;
use wxpay_guest::params::non_empty;
use wxpay_guest::{Params, SignType, xml};

use super::state::Env;
use super::tls::ClientCertificate;
use super::{KnownMerchant, Simulator, endpoints};

/// The simulated endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Endpoint {
    UnifiedOrder,
    OrderQuery,
    CloseOrder,
    Refund,
    RefundQuery,
    DownloadBill,
    Micropay,
    Reverse,
    GetSignKey,
}

fn route(path: &str) -> Option<(Env, Endpoint)> {
    if path == "/sandboxnew/pay/getsignkey" {
        return Some((Env::Production, Endpoint::GetSignKey));
    }
    let (env, rest) = match path.strip_prefix("/sandboxnew") {
        Some(rest) => (Env::Sandbox, rest),
        None => (Env::Production, path),
    };
    let endpoint = match rest {
        "/pay/unifiedorder" => Endpoint::UnifiedOrder,
        "/pay/orderquery" => Endpoint::OrderQuery,
        "/pay/closeorder" => Endpoint::CloseOrder,
        "/secapi/pay/refund" => Endpoint::Refund,
        // SDKs disagree on the sandbox refund path; WeChat's sandbox took both.
        "/pay/refund" if env == Env::Sandbox => Endpoint::Refund,
        "/pay/refundquery" => Endpoint::RefundQuery,
        "/pay/downloadbill" => Endpoint::DownloadBill,
        "/pay/micropay" => Endpoint::Micropay,
        "/secapi/pay/reverse" => Endpoint::Reverse,
        _ => return None,
    };
    Some((env, endpoint))
}

/// What an endpoint decided.
pub(super) enum Outcome {
    /// `result_code=SUCCESS` with these fields.
    Fields(Params),
    /// `result_code=FAIL` with this err_code and description.
    Business(&'static str, String),
    /// A reply outside the XML protocol (a bill, an HTML page, ...).
    Raw(Box<Response>),
}

/// A verified request, handed to the endpoint.
pub(super) struct Request<'a> {
    pub(super) sim: &'a Simulator,
    pub(super) env: Env,
    pub(super) merchant: &'a KnownMerchant,
    pub(super) mch_id: String,
    pub(super) params: Params,
    pub(super) sign_type: SignType,
}

impl Request<'_> {
    /// A field's value, when present and non-empty.
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        non_empty(&self.params, name)
    }
}

/// The axum handler for every WeChat path.
pub(super) async fn handle(
    State(sim): State<Simulator>,
    certificate: Option<Extension<ClientCertificate>>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let Some((env, endpoint)) = route(uri.path()) else {
        return (StatusCode::NOT_FOUND, html_page("404 Not Found")).into_response();
    };
    if method != Method::POST {
        return fail("请使用post方法");
    }
    // Over HTTPS, refund and reverse need the merchant's client certificate.
    let needs_certificate = matches!(endpoint, Endpoint::Refund | Endpoint::Reverse);
    if needs_certificate
        && certificate.is_some_and(|Extension(ClientCertificate(presented))| !presented)
    {
        return fail("请求需要双向证书");
    }
    if body.is_empty() {
        return fail("post数据为空");
    }
    if std::str::from_utf8(&body).is_err() {
        return fail("编码格式错误，请使用UTF-8");
    }
    let Ok(params) = xml::parse(&body) else {
        return fail("XML格式错误");
    };
    let Some(mch_id) = non_empty(&params, "mch_id").map(str::to_owned) else {
        return fail("mch_id参数缺失");
    };
    let Some(merchant) = sim.shared.merchants.get(&mch_id) else {
        return fail("商户号mch_id或sub_mch_id不存在");
    };
    let sign_type = match params.get("sign_type").map(String::as_str) {
        None | Some("") | Some("MD5") => SignType::Md5,
        Some("HMAC-SHA256") => SignType::HmacSha256,
        Some(_) => return fail("sign_type参数错误"),
    };
    if let Err(message) = check_signature(merchant, env, endpoint, &params, sign_type) {
        return fail(message);
    }
    let appid_matches =
        endpoint == Endpoint::GetSignKey || params.get("appid") == Some(&merchant.appid);
    let request = Request {
        sim: &sim,
        env,
        merchant,
        mch_id,
        params,
        sign_type,
    };
    let outcome = if appid_matches {
        endpoints::dispatch(endpoint, &request).await
    } else {
        Outcome::Business("APPID_MCHID_NOT_MATCH", "appid和mch_id不匹配".into())
    };
    signed_reply(&request, outcome)
}

/// WeChat's signature check: production calls with the API key and the
/// request's algorithm; sandbox calls with the sandbox key and MD5 only;
/// getsignkey with the production key and MD5.
fn check_signature(
    merchant: &KnownMerchant,
    env: Env,
    endpoint: Endpoint,
    params: &Params,
    sign_type: SignType,
) -> Result<(), &'static str> {
    let valid = match (env, endpoint) {
        (_, Endpoint::GetSignKey) => merchant.production.verify(params, SignType::Md5).is_ok(),
        (Env::Sandbox, _) => {
            sign_type == SignType::Md5 && merchant.sandbox.verify(params, SignType::Md5).is_ok()
        }
        (Env::Production, _) => merchant.production.verify(params, sign_type).is_ok(),
    };
    match (valid, env, endpoint) {
        (true, _, _) => Ok(()),
        (false, Env::Sandbox, ep) if ep != Endpoint::GetSignKey => {
            Err("沙箱验证签名失败，请确认沙箱签名key是否正确（通过getsignkey调用生成）")
        }
        (false, _, _) => Err("签名错误，请检查后再试"),
    }
}

/// The unsigned protocol-layer refusal.
pub(super) fn fail(return_msg: &str) -> Response {
    let mut p = Params::new();
    p.insert("return_code".into(), "FAIL".into());
    p.insert("return_msg".into(), return_msg.into());
    xml_response(&p)
}

fn xml_response(params: &Params) -> Response {
    match xml::write(params) {
        Ok(body) => ([(header::CONTENT_TYPE, "text/xml; charset=utf-8")], body).into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            html_page("500 Internal Server Error"),
        )
            .into_response(),
    }
}

/// A plain HTML error page, as a proxy in front of WeChat would send.
pub(super) fn html_page(title: &str) -> Response {
    let body = format!(
        "<html><head><title>{title}</title></head><body><h1>{title}</h1><hr><center>stgw</center></body></html>"
    );
    ([(header::CONTENT_TYPE, "text/html")], body).into_response()
}

/// A signed `return_code=SUCCESS` reply.
fn signed_reply(request: &Request<'_>, outcome: Outcome) -> Response {
    let (mut fields, result) = match outcome {
        Outcome::Raw(response) => return *response,
        Outcome::Fields(fields) => (fields, None),
        Outcome::Business(code, description) => (Params::new(), Some((code, description))),
    };
    fields.insert("return_code".into(), "SUCCESS".into());
    fields.insert("return_msg".into(), "OK".into());
    fields.insert("mch_id".into(), request.mch_id.clone());
    fields.insert("nonce_str".into(), nonce());
    let (signer, sign_type) = match request.env {
        Env::Sandbox => (&request.merchant.sandbox, SignType::Md5),
        Env::Production => (&request.merchant.production, request.sign_type),
    };
    if !fields.contains_key("sandbox_signkey") {
        fields.insert("appid".into(), request.merchant.appid.clone());
        match result {
            None => {
                fields.insert("result_code".into(), "SUCCESS".into());
            }
            Some((code, description)) => {
                fields.insert("result_code".into(), "FAIL".into());
                fields.insert("err_code".into(), code.into());
                fields.insert("err_code_des".into(), description);
            }
        }
    }
    if request.env == Env::Sandbox {
        fields.insert("device_info".into(), "sandbox".into());
    }
    let sign = signer.sign(&fields, sign_type);
    fields.insert("sign".into(), sign);
    xml_response(&fields)
}

/// A fresh 32-character nonce.
pub(super) fn nonce() -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

/// `n` random digits.
pub(super) fn digits(n: usize) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
        .collect()
}
