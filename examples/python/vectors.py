"""Load the wxpay signer component with wasmtime-py and check the known-answer vectors.

Usage: python examples/python/vectors.py [COMPONENT]
COMPONENT defaults to $WXPAY_COMPONENT, then target/wxpay-signer.wasm (repo root).
"""
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

from wasmtime import Engine, Store, WasiConfig
from wasmtime.component import Component, ComponentInstanceType, FuncType, Linker, Variant

ROOT = Path(__file__).resolve().parents[2]
KEYLESS = "wxpay:signer/keyless@0.1.0"
MERCHANT_API = "wxpay:signer/merchant-api@0.1.0"
SIGN_TYPES = {"MD5": "md5", "HMAC-SHA256": "hmac-sha256"}  # vector name -> WIT enum case

path = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("WXPAY_COMPONENT") or ROOT / "target/wxpay-signer.wasm"
engine = Engine()
component = Component.from_file(engine, str(path))

print(f"component: {path}")
for name, ext in component.type.exports(engine).items():
    print(f"export {name}")
    if isinstance(ext.ty, ComponentInstanceType):
        for item, sub in ext.ty.exports(engine).items():
            if isinstance(sub.ty, FuncType):
                print(f"  {item}({', '.join(p for p, _ in sub.ty.params)})")

linker = Linker(engine)
linker.add_wasip2()  # the guest imports only wasi:io / wasi:cli; WasiConfig() grants nothing
store = Store(engine)
store.set_wasi(WasiConfig())
instance = linker.instantiate(store, component)


def func(interface, name):
    return instance.get_func(store, instance.get_export_index(store, name, instance.get_export_index(store, interface)))


canonicalize = func(KEYLESS, "canonicalize")
create = func(MERCHANT_API, "[static]merchant.create")
sign = func(MERCHANT_API, "[method]merchant.sign")
sign_packed = func(MERCHANT_API, "[method]merchant.sign-packed")
jsapi_params = func(MERCHANT_API, "[method]merchant.jsapi-params")
app_params = func(MERCHANT_API, "[method]merchant.app-params")


def ok(value):
    # A result whose ok and err cases have different Python types comes back
    # untagged: the ok value itself, or the err value (here a Variant of `error`).
    if isinstance(value, Variant):
        raise RuntimeError(f"component error: {value}")
    return value


def merchant(appid, mch_id, key, sign_type):
    # Records are any object with one attribute per field, named as in WIT.
    config = SimpleNamespace(**{
        "appid": appid, "mch-id": mch_id, "api-key": key, "sign-type": SIGN_TYPES[sign_type],
        "sub-appid": None, "sub-mch-id": None, "sandbox": False,
    })
    return ok(create(store, config))


passed = failed = 0


def check(label, got, want):
    global passed, failed
    if got == want:
        passed += 1
        print(f"ok   {label}")
    else:
        failed += 1
        print(f"FAIL {label}: got {got!r}, want {want!r}")


for v in json.loads((ROOT / "tests/vectors/signatures.json").read_text("utf-8"))["vectors"]:
    params = [tuple(p) for p in v["params"]]
    check(f"{v['id']} canonicalize", ok(canonicalize(store, params)), v["canonical"])
    m = merchant("wxd930ea5d5a258f4f", "10000100", v["key"], v["sign_type"])
    try:
        # option<sign-type>: None, or the bare enum string; None means the merchant's algorithm.
        check(f"{v['id']} sign {v['sign_type']}", ok(sign(store, m, params, None)), v["sign"])
        # The same fields as one string: name=value, separated by NUL.
        packed = "\0".join(f"{name}={value}" for name, value in params)
        check(f"{v['id']} sign-packed {v['sign_type']}", ok(sign_packed(store, m, packed, None)), v["sign"])
    finally:
        m.drop(store)  # runs the guest destructor, which zeroizes the key

for v in json.loads((ROOT / "tests/vectors/client_params.json").read_text("utf-8"))["vectors"]:
    m = merchant(v["appid"], v["mch_id"], v["key"], v["sign_type"])
    try:
        method = jsapi_params if v["kind"] == "jsapi" else app_params
        got = ok(method(store, m, v["prepay_id"], v["nonce"], v["timestamp"]))
        check(f"{v['id']} {v['kind']}-params", got, [tuple(p) for p in v["expected"]])
    finally:
        m.drop(store)

# A typed error: a variant with a payload comes back as Variant(tag, payload).
err = canonicalize(store, [("a", "1"), ("a", "2")])
print(f"canonicalize([a=1, a=2]) -> {err}")
check("duplicate field is error.duplicate-field(\"a\")", err, Variant("duplicate-field", "a"))

print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
