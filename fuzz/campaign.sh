#!/usr/bin/env bash
# A fuzzing campaign: runs each named target (default: all) for SECONDS on
# a persistent working corpus in fuzz/work/<target> (git-ignored, grown
# from fuzz/corpus/<target>), then minimizes what it found into
# fuzz/corpus/<target>, so the committed corpus stays small.
#
# Minimizing keeps one input per coverage edge (`cargo fuzz cmin` with
# -use_counters=0: edges, not hit counts), beside the hand-written seeds,
# which keep their names. `campaign.sh minimize [TARGET...]` only does that.
#
# Prints libFuzzer's final statistics per target; FUZZING.md records them.
# Stops at the first crash, leaving the input in fuzz/artifacts/<target>/.
#
# usage: fuzz/campaign.sh SECONDS|minimize [TARGET...]
set -euo pipefail

mode="${1:?usage: $0 SECONDS|minimize [TARGET...]}"
shift
toolchain="${FUZZ_TOOLCHAIN:-nightly}"
cd "$(dirname "${BASH_SOURCE[0]}")"
# The component the host embeds, as the stable build made it (see smoke.sh).
prebuilt="$(cd .. && pwd)/target/guest-build/wasm32-wasip2/guest/wxpay_guest.wasm"
if [ -z "${WXPAY_GUEST_WASM:-}" ] && [ -f "$prebuilt" ]; then
  export WXPAY_GUEST_WASM="$prebuilt"
fi

cargo "+$toolchain" fuzz build
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
  mapfile -t targets < <(cargo "+$toolchain" fuzz list)
fi

is_generated() { [[ "$(basename "$1")" =~ ^[0-9a-f]{40}$ ]]; }

minimize() {
  local target="$1" work="work/$1" corpus="corpus/$1" merged
  merged="$(mktemp -d)"
  cp -R "$corpus/." "$merged/"
  if [ -d "$work" ]; then cp -R "$work/." "$merged/"; fi
  cargo "+$toolchain" fuzz cmin "$target" "$merged" -- -use_counters=0 >/dev/null 2>&1
  local before
  before=$(find "$corpus" -type f | wc -l)
  for file in "$corpus"/*; do
    [ -f "$file" ] || continue
    if is_generated "$file"; then
      rm -f "$file"
    else
      rm -f "$merged/$(sha1sum "$file" | cut -d' ' -f1)"
    fi
  done
  cp -R "$merged/." "$corpus/"
  rm -rf "$merged"
  echo "==> $target: corpus $before -> $(find "$corpus" -type f | wc -l) inputs" \
    "($(du -sh --apparent-size "$corpus" | cut -f1))"
}

for target in "${targets[@]}"; do
  mkdir -p "corpus/$target"
  if [ "$mode" != minimize ]; then
    work="work/$target"
    mkdir -p "$work" "artifacts/$target"
    cp -R "corpus/$target/." "$work/"
    echo "==> $target: ${mode}s from $(find "$work" -type f | wc -l) inputs"
    cargo "+$toolchain" fuzz run "$target" "$work" -- \
      -max_total_time="$mode" -timeout=10 -print_final_stats=1 \
      -artifact_prefix="artifacts/$target/" 2>&1 |
      grep -E '^(stat::|INFO: Loaded|==[0-9]+==ERROR|SUMMARY)' || true
    if [ -n "$(ls -A "artifacts/$target")" ]; then
      echo "CRASH in $target: $(ls "artifacts/$target")" >&2
      exit 1
    fi
  fi
  minimize "$target"
done
