#!/usr/bin/env bash
# CAM pictures of real COCO photos for the README's "Real photos" section.
#
#   docs/make_coco_figures.sh [STUDY_DIR]      (default STUDY_DIR: runs/study-coco-mini)
#
# Needs the frozen-feature runs of fold 0 of benchmarks/study_coco_mini.py (full labels and AN,
# efficientnet_lite0 ImageNet weights, 224 px) and `pamc`/`python` of the project's environment
# on PATH, or PAMC and PYTHON set. Takes three of fold 0's test photos (unseen by both models),
# those where one animal, vehicle or food item covers most of the frame (three different classes), and runs `pamc cam --side-by-side` on each
# with both models for that object's class; then opens the AN model's index.html in headless
# Chromium (skipped without Chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
STUDY=${1:-runs/study-coco-mini}
RUNS=$STUDY/frozen/runs/frozen
WORK=$STUDY/figures
IMAGES=docs/images
PAMC=${PAMC:-pamc}
PY=${PYTHON:-python}
ROOT=${COCO_MINI:-../shared/data/coco2017-mini}
mkdir -p "$WORK" "$IMAGES"

$PY - "$ROOT" "$STUDY" > "$WORK/photos.txt" <<'PYTHON'
import json, sys
from pathlib import Path
sys.path.insert(0, "benchmarks")
from study_coco_mini import fold_test_rows, union_paths
root, study = Path(sys.argv[1]), Path(sys.argv[2])
paths = union_paths(root, 224, study / "frozen" / "cache")
test = [paths[i] for i in fold_test_rows(len(paths), 5, 0)]
best = {}
for split in ("train2017", "val2017"):
    data = json.loads((root / "annotations" / f"instances_{split}.json").read_text())
    names = {c["id"]: c["name"] for c in data["categories"]}
    objects = {c["id"] for c in data["categories"] if c["supercategory"] in ("animal", "vehicle", "food")}
    images = {i["id"]: i for i in data["images"]}
    for a in data["annotations"]:
        image = images[a["image_id"]]
        path = f"{split}/{image['file_name']}"
        share = a["area"] / (image["width"] * image["height"])
        if path in test and a["category_id"] in objects and share > best.get(path, (0.0, ""))[0]:
            best[path] = (share, names[a["category_id"]])
chosen, classes = [], set()
for path, (share, name) in sorted(best.items(), key=lambda kv: -kv[1][0]):
    if name not in classes:
        chosen.append((path, name))
        classes.add(name)
    if len(chosen) == 3:
        break
for path, name in chosen:
    print(f"{root / path}\t{name}")
PYTHON

i=0
while IFS=$'\t' read -r photo cls; do
  i=$((i + 1))
  for model in full an; do
    $PAMC cam "$RUNS/$model-seed0" "$photo" --classes "$cls" --side-by-side --alpha 5 --out "$WORK/cam_${model}_$i"
    cp "$WORK/cam_${model}_$i/000_$(basename "${photo%.*}").png" "$IMAGES/coco_cam_${model}_$i.png"
  done
done < "$WORK/photos.txt"
chmod 644 "$IMAGES"/coco_cam_*.png

$PY - "$WORK" "$IMAGES" <<'PYTHON'
import sys
from pathlib import Path
from PIL import Image
from pamc.explain.screenshot import find_chromium, screenshot
work, images = Path(sys.argv[1]), Path(sys.argv[2])
for path in sorted(images.glob("coco_cam_*.png")):  # 256 colours: small files
    with Image.open(path) as img:
        small = img.convert("RGB").quantize(256)
    small.save(path, optimize=True)
if find_chromium() is None:
    print("Chromium not found: screenshot skipped (Debian: apt-get install chromium)")
else:
    out = images / "screenshot_coco_cam_index.png"
    screenshot(work / "cam_an_3" / "index.html", out, size=(900, 620))  # the giraffe of fold 0
    with Image.open(out) as img:
        small = img.convert("RGB").quantize(256)
    small.save(out, optimize=True)
    print(f"screenshot in {out}")
PYTHON
