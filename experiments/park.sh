#!/usr/bin/env bash
# Park a long run that cannot finish in this session, or bring a parked one back (docs/RESULTS.md).
#   experiments/park.sh park   RUN_DIR   # RUN_DIR's state (train_state.pt, config.yaml, metrics.jsonl)
#                                        # -> <its results folder>/parked/<run name>.tar.gz, to commit
#   experiments/park.sh resume ARCHIVE   # unpack it back into its run directory; rerun the experiment's
#                                        # command to continue (then delete ARCHIVE in the commit that
#                                        # records the finished run)
# At most one parked state at a time (this refuses a second). A run stopped mid-epoch (train.time_limit,
# SIGTERM) parks and resumes at that step.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  park)
    run=${2:?RUN_DIR}; run=${run%/}
    [ -f "$run/train_state.pt" ] || { echo "park: $run has no train_state.pt" >&2; exit 2; }
    results=$(dirname "$(dirname "$run")")   # results/<experiment>/runs/<run> -> results/<experiment>
    existing=$(git ls-files 'results/*/parked/*.tar.gz' | grep -v "^$results/parked/$(basename "$run").tar.gz$" || true)
    [ -z "$existing" ] || { echo "park: a parked state is committed already: $existing (finish it first)" >&2; exit 2; }
    mkdir -p "$results/parked"
    archive="$results/parked/$(basename "$run").tar.gz"
    tar -czf "$archive.tmp" -C "$(dirname "$run")" \
      "$(basename "$run")/train_state.pt" "$(basename "$run")/config.yaml" "$(basename "$run")/metrics.jsonl"
    # the archive must read back whole, with the state byte for byte, before it replaces the last one
    tar -xzOf "$archive.tmp" "$(basename "$run")/train_state.pt" | cmp -s - "$run/train_state.pt" \
      || { rm -f "$archive.tmp"; echo "park: $archive.tmp does not read back; the last parked state is kept" >&2; exit 1; }
    mv "$archive.tmp" "$archive"
    ls -l "$archive"
    ;;
  resume)
    archive=${2:?ARCHIVE}
    runs=$(dirname "$(dirname "$archive")")/runs
    mkdir -p "$runs"
    tar -xzf "$archive" -C "$runs"
    echo "unpacked into $runs/$(basename "$archive" .tar.gz): rerun the experiment's command to continue it"
    ;;
  *) echo "usage: experiments/park.sh park RUN_DIR | resume ARCHIVE" >&2; exit 2 ;;
esac
