#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a given time, one after another, and prints the
# executions per target, so the figures in README ("Fuzzing and property tests") can be
# reproduced.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET ...]     (default: 60 s, every target)
#
# Installs cargo-fuzz from crates.io if it is missing. cargo-fuzz needs nightly compiler
# features; RUSTC_BOOTSTRAP=1 lets the stable toolchain provide them. Each target runs as one
# libFuzzer process (one core). New inputs go to fuzz/target/corpus/<target>/ (not committed);
# the committed seeds in fuzz/corpus/<target>/ are only read. A crash stops that target's run,
# leaves its input in fuzz/artifacts/<target>/ and the script goes on with the next target;
# it exits 1 if any target crashed.
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-60}"
shift || true
export RUSTC_BOOTSTRAP=1

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

# The targets are safe Rust over safe Rust: AddressSanitizer finds nothing there that the
# panics and overflow checks (kept on) do not, and halves the speed. 16 codegen units keep the
# build reasonable on a small machine.
build=(--fuzz-dir fuzz -s none --codegen-units 16)
if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz)
fi

dict_for() {
    case "$1" in
        github_parse | form_body) echo github ;;
        gitlab_parse) echo gitlab ;;
        task_message) echo task ;;
        verify_github | verify_standard) echo verify ;;
        progress) echo progress ;;
        config_load) echo config ;;
    esac
}

cargo fuzz build "${build[@]}"
mkdir -p fuzz/target/logs
printf '%-16s %14s %8s %8s\n' target executions seconds crashes | tee fuzz/target/logs/summary.txt
status=0
total=0
for t in "${targets[@]}"; do
    work="fuzz/target/corpus/$t"
    mkdir -p "$work" "fuzz/corpus/$t" "fuzz/artifacts/$t"
    args=(-max_total_time="$secs" -timeout=10 -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$t/")
    d="$(dict_for "$t")"
    [ -n "$d" ] && args+=(-dict="fuzz/dict/$d.dict")
    log="fuzz/target/logs/$t.log"
    before=$(find "fuzz/artifacts/$t" -type f | wc -l)
    start=$(date +%s)
    if ! cargo fuzz run "${build[@]}" "$t" "$work" "fuzz/corpus/$t" -- "${args[@]}" >"$log" 2>&1; then
        status=1
    fi
    elapsed=$(($(date +%s) - start))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    # A run stopped by a crash prints no final stats; its last status line has the count.
    [ -n "$execs" ] || execs=$(sed -n 's/^#\([0-9][0-9]*\)[[:space:]].*/\1/p' "$log" | tail -1)
    execs="${execs:-0}"
    crashes=$(($(find "fuzz/artifacts/$t" -type f | wc -l) - before))
    total=$((total + execs))
    printf '%-16s %14s %8s %8s\n' "$t" "$execs" "$elapsed" "$crashes" | tee -a fuzz/target/logs/summary.txt
done
printf '%-16s %14s\n' total "$total" | tee -a fuzz/target/logs/summary.txt
exit "$status"
