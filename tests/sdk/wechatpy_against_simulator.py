#!/usr/bin/env python3
"""Runs the third-party WeChat Pay v2 SDK `wechatpy` (unchanged) against
`wxpay simulate`, and checks that wrongly signed requests are refused the way
WeChat refuses them.

Usage (from the repository root):

    python tests/sdk/wechatpy_against_simulator.py [path/to/wxpay]

The only thing pointed at the simulator is wechatpy's own base URL
attribute, `WeChatPay.API_BASE_URL` (set on the instance). Everything else
(signing, XML, sandbox key fetch, notification verification and refund
notification decryption) is wechatpy's own code.

Prints one line per check and ends with `N passed, M failed`; exits non-zero
on any failure.
"""

import datetime
import http.server
import json
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request
from pathlib import Path

import xmltodict
from wechatpy.exceptions import InvalidSignatureException, WeChatPayException
from wechatpy.pay import WeChatPay
from wechatpy.pay.utils import _check_signature, calculate_signature_hmac

APPID = "wxd930ea5d5a258f4f"
MCH_ID = "10000100"
API_KEY = "192006250b4c09247ec02edce69f6a2d"
SANDBOX_KEY = "0123456789abcdef0123456789abcdef"
WRONG_KEY = "ffffffffffffffffffffffffffffffff"
HMAC = "HMAC-SHA256"
BEIJING = datetime.timezone(datetime.timedelta(hours=8))

SIGN_ERROR = "签名错误，请检查后再试"
SANDBOX_SIGN_ERROR_PREFIX = "沙箱验证签名失败"

REPO_ROOT = Path(__file__).resolve().parents[2]

passed = 0
failed = 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"PASS {name}")
    else:
        failed += 1
        print(f"FAIL {name}" + (f": {detail}" if detail else ""))
    return ok


def note(text):
    print(f"NOTE {text}")


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def new_trade_no(tag):
    # [A-Za-z0-9_-|*@], 6..32 characters.
    return f"sdk{tag}{time.strftime('%H%M%S')}{random.randint(100000, 999999)}"


# --------------------------------------------------------------------------
# Notification receiver: the merchant's notify_url.


class Receiver:
    ACK = (
        "<xml><return_code><![CDATA[SUCCESS]]></return_code>"
        "<return_msg><![CDATA[OK]]></return_msg></xml>"
    ).encode()

    def __init__(self):
        self.bodies = {}  # path -> [bytes]
        self.cond = threading.Condition()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with receiver.cond:
                    receiver.bodies.setdefault(self.path, []).append(body)
                    receiver.cond.notify_all()
                self.send_response(200)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(Receiver.ACK)))
                self.end_headers()
                self.wfile.write(Receiver.ACK)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def wait(self, path, timeout=15.0):
        """The first body POSTed to `path`, or None after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not self.bodies.get(path):
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)
            return self.bodies[path][0]

    def wait_n(self, path, n, timeout=15.0):
        """The first `n` bodies POSTed to `path` (fewer after `timeout` seconds)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.bodies.get(path, [])) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            return list(self.bodies.get(path, []))[:n]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


# --------------------------------------------------------------------------
# The simulator process.


def start_simulator(binary, workdir):
    port = free_port()
    config = workdir / "merchants.toml"
    config.write_text(
        "[[merchants]]\n"
        f'appid = "{APPID}"\n'
        f'mch_id = "{MCH_ID}"\n'
        f'api_key = "{API_KEY}"\n'
        f'sandbox_key = "{SANDBOX_KEY}"\n'
        "\n"
        "[settings]\n"
        "clock_scale = 600.0\n",
        encoding="utf-8",
    )
    log = open(workdir / "simulator.log", "wb")
    proc = subprocess.Popen(
        [str(binary), "simulate", "--listen", f"127.0.0.1:{port}",
         "--merchant-config", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"simulator exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc, port, log
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("simulator did not accept connections within 30 s")


def stop_simulator(proc, log):
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    if log is not None:
        log.close()


def admin_pay(base, out_trade_no, sandbox=False):
    payload = {"out_trade_no": out_trade_no}
    if sandbox:
        payload["sandbox"] = True
    req = urllib.request.Request(
        f"{base}admin/pay",
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as res:
            return res.status, res.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


# --------------------------------------------------------------------------
# Helpers on wechatpy.


def client(base, api_key=API_KEY, sandbox=False, mch_cert=None, mch_key=None):
    pay = WeChatPay(APPID, api_key, MCH_ID, mch_cert=mch_cert, mch_key=mch_key,
                    timeout=10, sandbox=sandbox)
    # wechatpy builds every URL from this attribute (also getsignkey and the
    # sandboxnew/ prefix); it must end with a slash.
    pay.API_BASE_URL = base
    return pay


def reply_signed(data, key, sign_type):
    """Checks a reply's signature with wechatpy's own signing functions."""
    if sign_type == HMAC:
        fields = {k: v for k, v in data.items() if k != "sign"}
        return data.get("sign") == calculate_signature_hmac(fields, key)
    return _check_signature(dict(data), key)


def attempt(name, fn):
    """Runs fn; on an exception records a failure and returns None."""
    try:
        return fn()
    except WeChatPayException as e:
        check(name, False, f"{e!r}")
    except Exception as e:  # noqa: BLE001 (report everything)
        check(name, False, f"{type(e).__name__}: {e}")
        traceback.print_exc(file=sys.stdout)
    return None


def expect_pay_error(name, fn, want):
    """fn must raise WeChatPayException; `want(e)` says whether it is the right one."""
    try:
        result = fn()
    except WeChatPayException as e:
        return check(name, want(e), f"{e!r}")
    except Exception as e:  # noqa: BLE001
        return check(name, False, f"{type(e).__name__}: {e}")
    return check(name, False, f"no exception; reply {dict(result) if result else result}")


# --------------------------------------------------------------------------
# Flows.


def production_flow(base, receiver, sign_type, certs):
    tag = "md5" if sign_type == "MD5" else "hmac"
    label = f"[{sign_type}]"
    pay = client(base, mch_cert=certs[0] if certs else None,
                 mch_key=certs[1] if certs else None)
    extra = {"sign_type": HMAC} if sign_type == HMAC else {}

    def query(out_trade_no):
        if sign_type == HMAC:
            # order.query has no sign_type parameter: use wechatpy's generic
            # signed POST, which signs with HMAC when the data says so.
            return pay.post("pay/orderquery", data={
                "appid": APPID, "out_trade_no": out_trade_no, "sign_type": HMAC})
        return pay.order.query(out_trade_no=out_trade_no)

    def close(out_trade_no):
        if sign_type == HMAC:
            return pay.post("pay/closeorder", data={
                "appid": APPID, "out_trade_no": out_trade_no, "sign_type": HMAC})
        return pay.order.close(out_trade_no)

    # --- unified order (NATIVE) ---
    otn = new_trade_no(tag)
    notify_path = f"/notify/pay/{tag}"
    created = attempt(f"{label} order.create", lambda: pay.order.create(
        trade_type="NATIVE", body="wechatpy SDK test", total_fee=101,
        notify_url=receiver.url(notify_path), client_ip="127.0.0.1",
        out_trade_no=otn, product_id="sku-1", attach="sdk-attach", **extra))
    if created is None:
        return
    check(f"{label} order.create returns prepay_id and code_url",
          str(created.get("prepay_id", "")).startswith("wx")
          and str(created.get("code_url", "")).startswith("weixin://wxpay/bizpayurl?pr=")
          and created.get("trade_type") == "NATIVE",
          f"{dict(created)}")
    check(f"{label} order.create reply signature verifies ({sign_type})",
          reply_signed(created, API_KEY, sign_type), f"{dict(created)}")

    # --- query before payment ---
    q = attempt(f"{label} order.query (before payment)", lambda: query(otn))
    if q is not None:
        check(f"{label} order.query shows NOTPAY",
              q.get("trade_state") == "NOTPAY" and q.get("out_trade_no") == otn, f"{dict(q)}")
        check(f"{label} order.query reply signature verifies",
              reply_signed(q, API_KEY, sign_type), f"{dict(q)}")

    # --- the payer pays; the notification arrives ---
    status, text = admin_pay(base, otn)
    check(f"{label} POST /admin/pay", status == 200, f"HTTP {status}: {text}")
    body = receiver.wait(notify_path)
    if not check(f"{label} payment notification received", body is not None,
                 "nothing POSTed to notify_url within 15 s"):
        return
    transaction_id = None
    time_end = None
    if sign_type == "MD5":
        result = attempt(f"{label} parse_payment_result",
                         lambda: pay.parse_payment_result(body))
        if result is not None:
            transaction_id = result.get("transaction_id")
            time_end = result.get("time_end")
            check(f"{label} parse_payment_result verifies the notification",
                  result.get("out_trade_no") == otn and result.get("total_fee") == 101
                  and result.get("result_code") == "SUCCESS"
                  and result.get("appid") == APPID and result.get("mch_id") == MCH_ID
                  and result.get("attach") == "sdk-attach" and bool(transaction_id),
                  f"{dict(result)}")
    else:
        # wechatpy's parse_payment_result only computes MD5, so it cannot
        # accept the HMAC-SHA256 notification of an HMAC-SHA256 order.
        try:
            pay.parse_payment_result(body)
            md5_accepts = True
        except InvalidSignatureException:
            md5_accepts = False
        check(f"{label} notification is not MD5-signed (wechatpy's parse_payment_result "
              "is MD5-only and rejects it, as expected)", not md5_accepts)
        fields = dict(xmltodict.parse(body)["xml"])
        check(f"{label} notification verifies with wechatpy's calculate_signature_hmac",
              reply_signed(fields, API_KEY, HMAC)
              and fields.get("out_trade_no") == otn and fields.get("total_fee") == "101"
              and fields.get("result_code") == "SUCCESS",
              body.decode(errors="replace"))
        transaction_id = fields.get("transaction_id")
        time_end = fields.get("time_end")

    # --- query after payment ---
    q = attempt(f"{label} order.query (after payment)", lambda: query(otn))
    if q is not None:
        check(f"{label} order.query shows SUCCESS with the notified transaction_id",
              q.get("trade_state") == "SUCCESS" and q.get("transaction_id") == transaction_id
              and q.get("total_fee") == "101",
              f"{dict(q)}")

    # --- close another order: refused at once, allowed after 5 simulated minutes ---
    otn2 = new_trade_no(tag + "c")
    c = attempt(f"{label} order.create (order to close)", lambda: pay.order.create(
        trade_type="NATIVE", body="to be closed", total_fee=55,
        notify_url=receiver.url(f"/notify/unused/{tag}"), client_ip="127.0.0.1",
        out_trade_no=otn2, product_id="sku-2", **extra))
    if c is not None:
        expect_pay_error(
            f"{label} order.close right away -> TRADE_STATE_ERROR",
            lambda: close(otn2),
            lambda e: e.return_code == "SUCCESS" and e.result_code == "FAIL"
            and e.errcode == "TRADE_STATE_ERROR")
        time.sleep(1.0)  # 5 simulated minutes at clock_scale 600 = 0.5 s
        closed = attempt(f"{label} order.close", lambda: close(otn2))
        if closed is not None:
            check(f"{label} order.close succeeds after 5 simulated minutes",
                  closed.get("result_code") == "SUCCESS", f"{dict(closed)}")
            q = attempt(f"{label} order.query (closed order)", lambda: query(otn2))
            if q is not None:
                check(f"{label} order.query shows CLOSED", q.get("trade_state") == "CLOSED",
                      f"{dict(q)}")

    # --- refund (partial), its encrypted notification, refund query ---
    refund_no = f"R{otn}"
    refund_notify_path = f"/notify/refund/{tag}"
    if sign_type == HMAC:
        def apply():
            return pay.post("secapi/pay/refund", data={
                "appid": APPID, "out_trade_no": otn, "out_refund_no": refund_no,
                "total_fee": 101, "refund_fee": 40, "refund_fee_type": "CNY",
                "op_user_id": MCH_ID, "notify_url": receiver.url(refund_notify_path),
                "sign_type": HMAC})
    else:
        def apply():
            return pay.refund.apply(
                total_fee=101, refund_fee=40, out_refund_no=refund_no, out_trade_no=otn,
                notify_url=receiver.url(refund_notify_path))
    how = "with dummy mch_cert/mch_key files" if certs else "without mch_cert/mch_key"
    r = attempt(f"{label} refund.apply ({how})", apply)
    if r is None:
        return time_end
    check(f"{label} refund.apply returns refund_id",
          bool(r.get("refund_id")) and r.get("out_refund_no") == refund_no
          and r.get("refund_fee") == "40" and r.get("transaction_id") == transaction_id,
          f"{dict(r)}")
    check(f"{label} refund.apply reply signature verifies", reply_signed(r, API_KEY, sign_type),
          f"{dict(r)}")
    body = receiver.wait(refund_notify_path)
    if check(f"{label} refund notification received", body is not None,
             "nothing POSTed to the refund notify_url within 15 s"):
        info = attempt(f"{label} parse_refund_notify_result",
                       lambda: pay.parse_refund_notify_result(body))
        if info is not None:
            check(f"{label} parse_refund_notify_result decrypts req_info",
                  info.get("out_refund_no") == refund_no and info.get("out_trade_no") == otn
                  and info.get("refund_status") == "SUCCESS" and info.get("refund_fee") == 40
                  and info.get("total_fee") == 101,
                  f"{dict(info)}")
    rq = attempt(f"{label} refund.query", lambda: pay.refund.query(out_refund_no=refund_no))
    if rq is not None:
        check(f"{label} refund.query shows the refund SUCCESS",
              rq.get("refund_count") == "1" and rq.get("out_refund_no_0") == refund_no
              and rq.get("refund_status_0") == "SUCCESS" and rq.get("refund_fee_0") == "40",
              f"{dict(rq)}")
        check(f"{label} refund.query reply signature verifies (MD5)",
              reply_signed(rq, API_KEY, "MD5"), f"{dict(rq)}")
    return time_end


def sandbox_flow(base, receiver):
    label = "[sandbox]"
    pay = client(base, sandbox=True)
    otn = new_trade_no("sbx")
    notify_path = "/notify/pay/sandbox"
    created = attempt(f"{label} order.create", lambda: pay.order.create(
        trade_type="NATIVE", body="wechatpy sandbox test", total_fee=301,
        notify_url=receiver.url(notify_path), client_ip="127.0.0.1",
        out_trade_no=otn, product_id="sku-sbx"))
    check(f"{label} getsignkey handed wechatpy the configured sandbox key",
          pay._sandbox_api_key == SANDBOX_KEY, f"got {pay._sandbox_api_key!r}")
    if created is None:
        return
    check(f"{label} order.create returns prepay_id and code_url",
          str(created.get("prepay_id", "")).startswith("wx")
          and str(created.get("code_url", "")).startswith("weixin://"), f"{dict(created)}")
    check(f"{label} order.create reply signed with the sandbox key (pay.check_signature)",
          pay.check_signature(dict(created)), f"{dict(created)}")
    q = attempt(f"{label} order.query", lambda: pay.order.query(out_trade_no=otn))
    if q is not None:
        check(f"{label} order.query shows NOTPAY", q.get("trade_state") == "NOTPAY", f"{dict(q)}")
    status, text = admin_pay(base, otn, sandbox=True)
    check(f"{label} POST /admin/pay (sandbox)", status == 200, f"HTTP {status}: {text}")
    body = receiver.wait(notify_path)
    if check(f"{label} payment notification received", body is not None):
        result = attempt(f"{label} parse_payment_result",
                         lambda: pay.parse_payment_result(body))
        if result is not None:
            check(f"{label} parse_payment_result verifies with the sandbox key",
                  result.get("out_trade_no") == otn and result.get("total_fee") == 301,
                  f"{dict(result)}")
    q = attempt(f"{label} order.query (after payment)", lambda: pay.order.query(out_trade_no=otn))
    if q is not None:
        check(f"{label} order.query shows SUCCESS", q.get("trade_state") == "SUCCESS", f"{dict(q)}")
    # Refund under sandboxnew/secapi/pay/refund; its notification is
    # encrypted with the sandbox key, which parse_refund_notify_result uses.
    refund_no = f"R{otn}"
    refund_notify_path = "/notify/refund/sandbox"
    r = attempt(f"{label} refund.apply", lambda: pay.refund.apply(
        total_fee=301, refund_fee=301, out_refund_no=refund_no, out_trade_no=otn,
        notify_url=receiver.url(refund_notify_path)))
    if r is not None:
        check(f"{label} refund.apply returns refund_id",
              bool(r.get("refund_id")) and r.get("refund_fee") == "301", f"{dict(r)}")
        body = receiver.wait(refund_notify_path)
        if check(f"{label} refund notification received", body is not None):
            info = attempt(f"{label} parse_refund_notify_result",
                           lambda: pay.parse_refund_notify_result(body))
            if info is not None:
                check(f"{label} parse_refund_notify_result decrypts with the sandbox key",
                      info.get("out_refund_no") == refund_no
                      and info.get("refund_status") == "SUCCESS", f"{dict(info)}")
        rq = attempt(f"{label} refund.query", lambda: pay.refund.query(out_refund_no=refund_no))
        if rq is not None:
            check(f"{label} refund.query shows SUCCESS",
                  rq.get("refund_status_0") == "SUCCESS", f"{dict(rq)}")
    # A production-keyed client must not see the sandbox order.
    prod = client(base)
    expect_pay_error(f"{label} sandbox order is invisible in production (ORDERNOTEXIST)",
                     lambda: prod.order.query(out_trade_no=otn),
                     lambda e: e.errcode == "ORDERNOTEXIST")


def extra_apis(base, bill_date):
    """Micropay, reverse and downloadbill through wechatpy's own methods."""
    label = "[extra]"
    pay = client(base)
    otn = new_trade_no("mp")
    m = attempt(f"{label} micropay.create", lambda: pay.micropay.create(
        body="micropay test", total_fee=1, auth_code="134567890123456789",
        client_ip="127.0.0.1", out_trade_no=otn))
    if m is not None:
        check(f"{label} micropay.create pays at once",
              m.get("out_trade_no") == otn and bool(m.get("transaction_id"))
              and m.get("total_fee") == "1", f"{dict(m)}")
        rv = attempt(f"{label} order.reverse", lambda: pay.order.reverse(out_trade_no=otn))
        if rv is not None:
            check(f"{label} order.reverse answers recall=N", rv.get("recall") == "N", f"{dict(rv)}")
            q = attempt(f"{label} micropay.query", lambda: pay.micropay.query(out_trade_no=otn))
            if q is not None:
                check(f"{label} micropay.query shows REVOKED", q.get("trade_state") == "REVOKED",
                      f"{dict(q)}")
    if not bill_date:
        check(f"{label} tools.download_bill", False, "no time_end from the MD5 payment flow")
        return
    bill = attempt(f"{label} tools.download_bill",
                   lambda: pay.tools.download_bill(bill_date, bill_type="ALL"))
    if bill is not None:
        check(f"{label} tools.download_bill returns the text bill with the paid orders",
              isinstance(bill, str) and bill.startswith("交易时间,")
              and "总交易单数" in bill and "`sdkmd5" in bill, repr(bill)[:300])
    expect_pay_error(
        f"{label} tools.download_bill for a day with no bill -> No Bill Exist",
        lambda: pay.tools.download_bill("20000101"),
        lambda e: e.return_code == "FAIL" and e.return_msg == "No Bill Exist")


def scenario_checks(base, receiver):
    """The simulator's misbehaviour scenarios (chosen by amount), seen through wechatpy."""
    label = "[scenario]"
    pay = client(base)
    for fee, name in ((106, "forged_signature"), (108, "tampered_total_fee")):
        otn = new_trade_no(f"s{fee}")
        path = f"/notify/scenario/{fee}"
        created = attempt(f"{label} {name}: order.create", lambda: pay.order.create(
            trade_type="NATIVE", body=name, total_fee=fee, notify_url=receiver.url(path),
            client_ip="127.0.0.1", out_trade_no=otn, product_id="sku-s"))
        if created is None:
            continue
        status, text = admin_pay(base, otn)
        check(f"{label} {name}: POST /admin/pay", status == 200, f"HTTP {status}: {text}")
        bodies = receiver.wait_n(path, 2)
        if not check(f"{label} {name}: bad then genuine notification received",
                     len(bodies) == 2, f"got {len(bodies)}"):
            continue
        try:
            pay.parse_payment_result(bodies[0])
            rejected = False
        except InvalidSignatureException:
            rejected = True
        check(f"{label} {name}: parse_payment_result rejects the bad notification", rejected,
              bodies[0].decode(errors="replace"))
        good = attempt(f"{label} {name}: parse_payment_result on the genuine one",
                       lambda: pay.parse_payment_result(bodies[1]))
        if good is not None:
            check(f"{label} {name}: genuine notification verifies",
                  good.get("out_trade_no") == otn and good.get("total_fee") == fee, f"{dict(good)}")

    # SYSTEMERROR on the first unifiedorder; the retry succeeds. WeChat's
    # message asks for a retry "with the same parameters" (请用相同参数重新调用),
    # and wechatpy fills time_start/time_expire from the clock, so the
    # retry passes them explicitly to repeat the request exactly.
    otn = new_trade_no("s110")
    start = datetime.datetime.now(BEIJING).replace(microsecond=0)
    expire = start + datetime.timedelta(hours=2)

    def create():
        return pay.order.create(
            trade_type="NATIVE", body="system error", total_fee=110,
            notify_url=receiver.url("/notify/scenario/110"), client_ip="127.0.0.1",
            out_trade_no=otn, product_id="sku-s", time_start=start, time_expire=expire)

    expect_pay_error(f"{label} system_error_then_success: first order.create -> SYSTEMERROR",
                     create, lambda e: e.result_code == "FAIL" and e.errcode == "SYSTEMERROR")
    again = attempt(f"{label} system_error_then_success: retry", create)
    if again is not None:
        check(f"{label} system_error_then_success: retry returns a prepay_id",
              str(again.get("prepay_id", "")).startswith("wx"), f"{dict(again)}")


def negative_checks(base):
    otn = new_trade_no("neg")
    wrong = client(base, api_key=WRONG_KEY)

    def create(pay, **extra):
        return pay.order.create(
            trade_type="NATIVE", body="bad signature", total_fee=1,
            notify_url="http://127.0.0.1:9/never", client_ip="127.0.0.1",
            out_trade_no=otn, product_id="sku-neg", **extra)

    expect_pay_error(
        f"[negative] wrong api_key (MD5) -> return_code FAIL, return_msg {SIGN_ERROR}",
        lambda: create(wrong),
        lambda e: e.return_code == "FAIL" and e.return_msg == SIGN_ERROR)
    expect_pay_error(
        f"[negative] wrong api_key (HMAC-SHA256) -> return_msg {SIGN_ERROR}",
        lambda: create(wrong, sign_type=HMAC),
        lambda e: e.return_code == "FAIL" and e.return_msg == SIGN_ERROR)
    # A production client pointed at the sandbox paths: signs with the
    # production key where the sandbox key is needed.
    misrouted = client(base + "sandboxnew/")
    expect_pay_error(
        f"[negative] sandbox call signed with the production key -> "
        f"return_msg starts {SANDBOX_SIGN_ERROR_PREFIX}",
        lambda: create(misrouted),
        lambda e: e.return_code == "FAIL"
        and str(e.return_msg).startswith(SANDBOX_SIGN_ERROR_PREFIX))
    # The refused requests left no order behind.
    expect_pay_error(
        "[negative] refused orders were not created (ORDERNOTEXIST)",
        lambda: client(base).order.query(out_trade_no=otn),
        lambda e: e.errcode == "ORDERNOTEXIST")


def main():
    binary = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO_ROOT / "target" / "debug" / "wxpay"
    binary = binary.resolve()
    if not binary.is_file():
        print(f"FAIL wxpay binary not found at {binary}")
        print("0 passed, 1 failed")
        return 1
    proc = log = receiver = None
    with tempfile.TemporaryDirectory(prefix="wechatpy-sim-") as tmp:
        workdir = Path(tmp)
        try:
            proc, port, log = start_simulator(binary, workdir)
            base = f"http://127.0.0.1:{port}/"
            note(f"simulator on {base}, wechatpy {__import__('wechatpy').__version__}")
            receiver = Receiver()
            # A production client as deployed carries its client certificate;
            # over plain http requests checks the files exist and sends no
            # certificate. The contents are placeholders.
            cert, key = workdir / "apiclient_cert.pem", workdir / "apiclient_key.pem"
            cert.write_text("placeholder: not used over http\n")
            key.write_text("placeholder: not used over http\n")
            time_end = production_flow(base, receiver, "MD5", (str(cert), str(key)))
            production_flow(base, receiver, HMAC, None)
            sandbox_flow(base, receiver)
            extra_apis(base, (time_end or "")[:8])
            scenario_checks(base, receiver)
            negative_checks(base)
        except Exception as e:  # noqa: BLE001
            check("harness", False, f"{type(e).__name__}: {e}")
            traceback.print_exc(file=sys.stdout)
        finally:
            if receiver is not None:
                receiver.close()
            stop_simulator(proc, log)
            if failed:
                log_path = workdir / "simulator.log"
                if log_path.exists():
                    tail = log_path.read_text(errors="replace").splitlines()[-40:]
                    print("---- simulator log (tail) ----")
                    print("\n".join(tail))
    print(f"{passed} passed, {failed} failed")
    return 1 if failed or not passed else 0


if __name__ == "__main__":
    sys.exit(main())
