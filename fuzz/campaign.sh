#!/usr/bin/env bash
# A fuzzing campaign: runs each named target (default: all) for SECONDS on
# a persistent working corpus in fuzz/work/<target> (git-ignored, grown
# from the committed seeds in fuzz/corpus/<target>), then minimizes the
# working corpus with `cargo fuzz cmin` and adds it to fuzz/corpus/<target>
# beside the hand-written seeds, so the committed corpus stays small but
# keeps every feature found.
#
# Prints libFuzzer's final statistics per target; FUZZING.md records them.
# Stops at the first crash, leaving the input in fuzz/artifacts/<target>/.
#
# usage: fuzz/campaign.sh SECONDS [TARGET...]
set -euo pipefail

secs="${1:?usage: $0 SECONDS [TARGET...]}"
shift
toolchain="${FUZZ_TOOLCHAIN:-nightly}"
cd "$(dirname "${BASH_SOURCE[0]}")"

cargo "+$toolchain" fuzz build
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
  mapfile -t targets < <(cargo "+$toolchain" fuzz list)
fi

for target in "${targets[@]}"; do
  work="work/$target"
  mkdir -p "$work" "corpus/$target" "artifacts/$target"
  cp -R "corpus/$target/." "$work/"
  echo "==> $target: ${secs}s from $(find "$work" -type f | wc -l) inputs"
  cargo "+$toolchain" fuzz run "$target" "$work" -- \
    -max_total_time="$secs" -timeout=10 -print_final_stats=1 \
    -artifact_prefix="artifacts/$target/" 2>&1 |
    grep -E '^(stat::|#[0-9]+ *DONE|INFO: Loaded|==[0-9]+==ERROR|SUMMARY)' || true
  if [ -n "$(ls -A "artifacts/$target")" ]; then
    echo "CRASH in $target: $(ls "artifacts/$target")" >&2
    exit 1
  fi
  before=$(find "corpus/$target" -type f | wc -l)
  cargo "+$toolchain" fuzz cmin "$target" "$work" >/dev/null 2>&1
  # The hand-written seeds keep their names; cmin's copies of them go.
  for seed in "corpus/$target"/*; do
    [ -f "$seed" ] || continue
    rm -f "$work/$(sha1sum "$seed" | cut -d' ' -f1)"
  done
  cp -R "$work/." "corpus/$target/"
  echo "==> $target: corpus $before -> $(find "corpus/$target" -type f | wc -l) inputs after cmin"
done
