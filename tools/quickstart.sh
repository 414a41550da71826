#!/usr/bin/env bash
# The main job on the embedded default: install what is missing, generate the
# synthetic dataset if absent, train a small detector on CPU, evaluate it and
# print the mAP and where the checkpoint and logs are.
#   bash tools/quickstart.sh [CONFIG] [train.py args...]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
CONFIG=${1:-configs/synthetic/bhcl-decoupled_orientedformer-r18_1xb2-12e_synthetic.py}
shift || true
WORK_DIR=${WORK_DIR:-work_dirs/quickstart/$(basename "$CONFIG" .py)}
PY=${PYTHON:-python3}
[ -n "${VIRTUAL_ENV:-}" ] && PY="$VIRTUAL_ENV/bin/python"
T0=$(date +%s)

echo "== [1/4] environment"
bash tools/install.sh
echo "== [2/4] synthetic dataset (data/synthetic)"
"$PY" tools/generate_synthetic_dataset.py --out data/synthetic
echo "== [3/4] train $CONFIG"
"$PY" tools/train.py "$CONFIG" --work-dir "$WORK_DIR" "$@"
CKPT=$(cat "$WORK_DIR/last_checkpoint")
echo "== [4/4] evaluate $CKPT"
"$PY" tools/test.py "$CONFIG" "$CKPT" --work-dir "$WORK_DIR"
"$PY" - "$WORK_DIR" "$CKPT" "$(( $(date +%s) - T0 ))" <<'PYEOF'
import json, os.path as osp, sys
work_dir, ckpt, secs = sys.argv[1:]
metrics = json.load(open(osp.join(work_dir, 'metrics.json')))
main = next((k for k in ('dota/leaf_mAP', 'dota/mAP') if k in metrics), None)
print('=' * 60)
if main:
    print(f'{main}: {metrics[main]:.4f}')
print('all metrics:', ', '.join(f'{k}={v:.4f}' for k, v in metrics.items()
                                if isinstance(v, float)))
print(f'checkpoint : {ckpt}')
print(f'logs       : {work_dir}')
print(f'total time : {secs} s')
PYEOF
