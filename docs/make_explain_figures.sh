#!/usr/bin/env bash
# Reproduces the figures and numbers of docs/explain.md and the README's "Explanations" section.
#
#   docs/make_explain_figures.sh [WORK_DIR]      (default WORK_DIR: runs/explain)
#
# Needs `pamc` and `python` of the project's environment on PATH (after `make install`:
# PATH=.venv/bin:$PATH docs/make_explain_figures.sh), or set PAMC and PYTHON.
# Trainings whose run directory already holds test_results.json are not repeated.
#
# 1. pretrains a smallcnn on full labels of *other* synthetic scenes (seed 7), standing in for
#    the ImageNet-pretrained backbone both models of the paper start from (the demo's
#    pretraining, pamc.pretrain; cached in WORK_DIR/pretrained);
# 2. fine-tunes it on the demo's synthetic scenes twice: full labels, and AN on one positive label;
# 3. runs `pamc explain-gap`, `pamc alpha-sweep` and `pamc cam`;
# 4. screenshots the figures and index.html in headless Chromium (skipped without Chromium).
# About 4 trainings of 20 s each on a quiet 2-core machine.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-runs/explain}
IMAGES=docs/images
PAMC=${PAMC:-pamc}
PY=${PYTHON:-python}
mkdir -p "$WORK" "$IMAGES"

cat > "$WORK/base.yaml" <<'YAML'
data: {dataset: synthetic, synthetic: {num_train: 1600, num_test: 1000, image_size: 48}}
model: {backbone: smallcnn}
train: {epochs: 20, batch_size: 32, lr: 0.004, head_lr_mult: 10.0, seed: 0}
YAML

train() {  # train NAME FLAGS... (skipped when the run exists)
  local name=$1; shift
  [ -f "$WORK/$name/test_results.json" ] || $PAMC train -c "$WORK/base.yaml" --no-progress -o "$WORK/$name" "$@"
}

# the demo's cached pretraining (pamc.pretrain): full labels of synthetic scenes of seed 7
BACKBONE=$($PY -c 'import sys; from pathlib import Path; from pamc.demo import resolve_pretrained
print(resolve_pretrained("synthetic", "smallcnn", False, Path(sys.argv[1])))' "$WORK/pretrained")
train full --method full --pretrained "$BACKBONE" --lr 0.001 --epochs 10
train an --method an --pretrained "$BACKBONE" --lr 0.001 --epochs 10

$PAMC explain-gap "$WORK/full" "$WORK/an" --alpha 5 --out "$WORK/gap" | tee "$WORK/gap.txt"
$PAMC alpha-sweep "$WORK/an" --alpha 1,2,3,5,8,10 --out "$WORK/alpha_sweep_an.png" --json "$WORK/alpha_sweep_an.json"
$PAMC cam "$WORK/an" --dataset-split test --limit 8 --top-k 3 --side-by-side --out "$WORK/cam_an"
$PAMC cam "$WORK/full" --dataset-split test --limit 8 --top-k 3 --out "$WORK/cam_full"

cp "$WORK/gap/gap.png" "$IMAGES/explain_gap.png"
cp "$WORK/alpha_sweep_an.png" "$IMAGES/alpha_sweep_an.png"
cp "$WORK/cam_an/test_00001.png" "$IMAGES/cam_an_side_by_side.png"
cp "$WORK/cam_full/test_00001.png" "$IMAGES/cam_full.png"
chmod 644 "$IMAGES"/*.png  # atomic_write creates 0600 files

$PY - "$WORK" "$IMAGES" <<'PYTHON'
import sys
from pathlib import Path
from PIL import Image
from pamc.explain.screenshot import find_chromium, screenshot
work, images = Path(sys.argv[1]), Path(sys.argv[2])
if find_chromium() is None:
    print("Chromium not found: screenshots skipped (Debian: apt-get install chromium)")
else:
    screenshot(work / "cam_an" / "index.html", images / "screenshot_cam_index.png", size=(1200, 900))
    screenshot(work / "gap" / "gap.png", images / "screenshot_gap_png.png", size=(1100, 400))
    for name in ("screenshot_cam_index.png", "screenshot_gap_png.png"):  # 256 colours: small files
        with Image.open(images / name) as img:
            small = img.convert("RGB").quantize(256)
        small.save(images / name, optimize=True)
    print(f"screenshots in {images}")
PYTHON
