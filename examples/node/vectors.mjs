// Transpile the wxpay signer component with jco, load it, and check the known-answer vectors.
//
// Usage: npm test -- [COMPONENT]   (or: node vectors.mjs [COMPONENT])
// COMPONENT defaults to $WXPAY_COMPONENT, then target/wxpay-signer.wasm (repo root).
// A relative path is taken from the directory npm was started in.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isDeepStrictEqual } from 'node:util';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '../..');
const arg = process.argv[2] ?? process.env.WXPAY_COMPONENT;
const component = arg ? resolve(process.env.INIT_CWD ?? process.cwd(), arg) : join(root, 'target/wxpay-signer.wasm');
const signTypes = { MD5: 'md5', 'HMAC-SHA256': 'hmac-sha256' }; // vector name -> WIT enum case

console.log(`component: ${component}`);
execFileSync(join(here, 'node_modules/.bin/jco'), ['transpile', component, '-o', join(here, 'out'), '--name', 'wxpay'], {
  stdio: ['ignore', 'ignore', 'inherit'],
});
const exports = await import('./out/wxpay.js');

// Each export is reachable by its WIT name and by a camelCase alias (keyless, merchantApi).
for (const [iface, ns] of Object.entries(exports).filter(([name]) => name.includes(':'))) {
  const alias = Object.keys(exports).find((name) => !name.includes(':') && exports[name] === ns);
  console.log(`export ${iface} (as ${alias})`);
  for (const [name, value] of Object.entries(ns)) {
    if (!/^class\b/.test(Function.prototype.toString.call(value))) {
      console.log(`  ${name}()`);
      continue;
    }
    console.log(`  class ${name}`);
    for (const s of Object.getOwnPropertyNames(value).filter((p) => typeof value[p] === 'function')) console.log(`    static ${s}()`);
    for (const m of Object.getOwnPropertyNames(value.prototype).filter((p) => p !== 'constructor')) console.log(`    ${m}()`);
  }
}

const { keyless, merchantApi } = exports;
let passed = 0;
let failed = 0;
function check(label, got, want) {
  if (isDeepStrictEqual(got, want)) {
    passed++;
    console.log(`ok   ${label}`);
  } else {
    failed++;
    console.log(`FAIL ${label}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
  }
}

// A `result` error is thrown as a ComponentError whose `payload` is the `error` variant ({ tag, val }).
function merchant(appid, mchId, apiKey, signType) {
  // Record fields are camelCase; `option` fields may be left out (undefined = none).
  return merchantApi.Merchant.create({ appid, mchId, apiKey, signType: signTypes[signType], sandbox: false });
}

const vectorsDir = join(root, 'tests/vectors');
for (const v of JSON.parse(readFileSync(join(vectorsDir, 'signatures.json'), 'utf8')).vectors) {
  check(`${v.id} canonicalize`, keyless.canonicalize(v.params), v.canonical);
  const m = merchant('wxd930ea5d5a258f4f', '10000100', v.key, v.sign_type);
  try {
    check(`${v.id} sign ${v.sign_type}`, m.sign(v.params, undefined), v.sign); // undefined = the merchant's algorithm
    const packed = v.params.map(([name, value]) => `${name}=${value}`).join('\0'); // name=value, separated by NUL
    check(`${v.id} sign-packed ${v.sign_type}`, m.signPacked(packed, undefined), v.sign);
  } finally {
    m[Symbol.dispose](); // drops the resource: the guest zeroizes the key
  }
}

for (const v of JSON.parse(readFileSync(join(vectorsDir, 'client_params.json'), 'utf8')).vectors) {
  const m = merchant(v.appid, v.mch_id, v.key, v.sign_type);
  try {
    const method = v.kind === 'jsapi' ? 'jsapiParams' : 'appParams';
    check(`${v.id} ${v.kind}-params`, m[method](v.prepay_id, v.nonce, BigInt(v.timestamp)), v.expected); // u64 is a bigint
  } finally {
    m[Symbol.dispose]();
  }
}

let error;
try {
  keyless.canonicalize([['a', '1'], ['a', '2']]);
} catch (e) {
  error = e.payload;
}
console.log(`canonicalize([a=1, a=2]) threw ${JSON.stringify(error)}`);
check('duplicate field is error.duplicate-field("a")', error, { tag: 'duplicate-field', val: 'a' });

console.log(`${passed} passed, ${failed} failed`);
process.exitCode = failed ? 1 : 0;
