#!/usr/bin/env bash
# docs/benchmarks.md = a short header + every section in docs/benchmarks/ (latest figures of each benchmark).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
{
  echo "# Benchmarks"
  echo
  echo "Written by \`make bench\` (benchmarks/run_all.sh) from the sections in docs/benchmarks/."
  echo "The machine is shared and noisy: read the ratios measured side by side, not single absolute times."
  for section in data models training train_step learning fracatlas inference scope memory service dicom; do
    f=docs/benchmarks/$section.md
    [ -f "$f" ] && { echo; cat "$f"; }
  done
} > docs/benchmarks.md
echo "wrote docs/benchmarks.md"
