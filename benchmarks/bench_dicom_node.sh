#!/usr/bin/env bash
# DICOM node latency: a 4-view study sent with dcmtk's storescu to `mura dicom-node`, forwarded to a real
# Orthanc; time from the last instance acknowledged to the SR and 4 Secondary Captures stored in Orthanc,
# quiet period excluded (3 studies). Needs Debian orthanc + dcmtk (`make test-deps`). Writes
# docs/benchmarks/dicom.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-.venv/bin/python}
log=$(mktemp)
OMP_WAIT_POLICY=PASSIVE "$PY" -m pytest -q -s -p no:cacheprovider -m benchmark tests/pacs/test_node.py \
    -k latency | tee "$log"
line=$(grep "runs:" "$log" | tail -1)
{
  echo "## DICOM node (\`mura dicom-node\`) next to a real Orthanc"
  echo
  echo "\`benchmarks/bench_dicom_node.sh\`: a 4-view DX study (tiny random custom_cnn, CPU) sent with dcmtk's"
  echo "\`storescu\` to the node, which analyses it once the study has been quiet for 0.5 s and forwards"
  echo "the SR and 4 Secondary Captures (Grad-CAM overlays) to Orthanc by C-STORE. Time from the last"
  echo "instance acknowledged to all 5 objects found in Orthanc's REST API (polled every 20 ms), quiet"
  echo "period excluded; $(uptime | sed 's/.*load average/load average/') on the shared 2-core machine."
  echo
  echo "- $(echo "$line" | sed "s/^ *//")"
} > docs/benchmarks/dicom.md
rm -f "$log"
echo "wrote docs/benchmarks/dicom.md"
