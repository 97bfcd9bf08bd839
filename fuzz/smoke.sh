#!/usr/bin/env bash
# Fuzz smoke test for CI: build every cargo-fuzz target with nightly, then
# run each one for N seconds (first argument, default 10) starting from a
# temporary copy of its seed corpus, so nothing is written into the repo
# except the build directory (fuzz/target, git-ignored).
#
# Fails (exit 1) if any target crashes, panics, times out on an input or
# runs out of memory. The offending inputs are printed (base64) and copied
# to FUZZ_ARTIFACTS_DIR/<target>/ (default: fuzz/artifacts, git-ignored)
# for CI to upload; reproduce with `cargo +nightly fuzz run <target> <file>`.
#
# Assumes cargo-fuzz is installed (`cargo install cargo-fuzz --locked`).
# Environment: FUZZ_TOOLCHAIN (default nightly), FUZZ_ARTIFACTS_DIR.
set -euo pipefail

secs="${1:-10}"
case "$secs" in
  '' | *[!0-9]* | 0) echo "usage: $0 [SECONDS>0]" >&2; exit 2 ;;
esac
toolchain="${FUZZ_TOOLCHAIN:-nightly}"

cd "$(dirname "${BASH_SOURCE[0]}")"
artifacts_out="${FUZZ_ARTIFACTS_DIR:-$PWD/artifacts}"
# component_differential links the host, whose build script would build the
# guest again with nightly (and need its wasm target); the component the
# stable build already made is the one that ships, so use it when present.
prebuilt="$(cd .. && pwd)/target/guest-build/wasm32-wasip2/guest/wxpay_guest.wasm"
if [ -z "${WXPAY_GUEST_WASM:-}" ] && [ -f "$prebuilt" ]; then
  export WXPAY_GUEST_WASM="$prebuilt"
fi

cargo "+$toolchain" fuzz build

work="$(mktemp -d "${TMPDIR:-/tmp}/wxpay-fuzz.XXXXXX")"
trap 'rm -rf "$work"' EXIT

failed=()
for target in $(cargo "+$toolchain" fuzz list); do
  corpus="$work/corpus/$target"
  artifacts="$work/artifacts/$target"
  mkdir -p "$corpus" "$artifacts"
  if [ -d "corpus/$target" ]; then
    cp -R "corpus/$target/." "$corpus/"
  fi
  echo "::group::fuzz $target (${secs}s)"
  # -timeout: an input taking longer than 10 s is a failure, not a stall.
  # cargo-fuzz passes its own -artifact_prefix first; libFuzzer uses the last.
  if cargo "+$toolchain" fuzz run "$target" "$corpus" -- \
      -max_total_time="$secs" -timeout=10 -artifact_prefix="$artifacts/" -print_final_stats=1; then
    echo "::endgroup::"
  else
    echo "::endgroup::"
    echo "FAILED: $target" >&2
    for f in "$artifacts"/*; do
      [ -e "$f" ] || continue
      echo "  input $(basename "$f") (base64): $(base64 -w0 "$f" | head -c 4096)" >&2
    done
    mkdir -p "$artifacts_out/$target"
    cp -R "$artifacts/." "$artifacts_out/$target/"
    failed+=("$target")
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz smoke test failed: ${failed[*]} (inputs in $artifacts_out)" >&2
  echo "reproduce with: cargo +$toolchain fuzz run <target> <input-file>" >&2
  exit 1
fi
echo "fuzz smoke test passed (${secs}s per target)"
