"""The real-photo study: coco2017-mini, EfficientNet-Lite0 ImageNet weights, one positive per image.

    PYTHONPATH=src python benchmarks/study_coco_mini.py --out runs/study-coco-mini

The 444 annotated photos of ``../shared/data/coco2017-mini`` (train2017 + val2017 together)
are cut into ``--folds`` folds; each fold is the test set once, the other images are split
80/20 into train/val, and every training image keeps one observed positive (a fresh draw per
fold). Two regimes share the folds:

* ``finetune``: the core arms (full labels, AN, LL-R, LL-R + BoostLU) trained end to end
  from the ImageNet weights at ``--ft-size`` px;
* ``frozen``: the backbone's ImageNet features at ``--frozen-size`` px, only the CAM head
  trained: the core arms, then each method of ``--methods`` alone and with BoostLU.

For the C1 claim the raw CAMs of the full-label and the AN model of each fold and regime are
compared on that fold's test photos, positive (image, class) pairs only, with the functions
``pamc explain-gap`` uses (CAM correlation, attribution ratio, share of the gap BoostLU closes).
Arms that re-evaluate another arm's model at a BoostLU alpha (``reuse``) run its full model.

In the frozen regime every run starts from the same ImageNet backbone in eval mode, so the
feature maps of the 444 photos are computed once and shared by all runs (``SharedFeatures``).

Resumable: the arms run through :func:`pamc.arms.run_arms`, so a finished run directory is read
back; an interrupted one (a ``last`` checkpoint, no results) is resumed first.
The script reports its wall and CPU time (summed over invocations) in ``results.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pamc.config import config_from_dict, replace
from pamc.data import build_dataset
from pamc.data.adapters.common import parse_dataset
from pamc.data.datasets import DatasetBundle, Split, split_indices
from pamc.data.labels import LabelStore, false_negative_rate, observe
from pamc.arms import Arm, plan, run_arms
from pamc.demo import BOOST_ALPHA, ll_delta_rel_for
from pamc.data import DeviceTransform
from pamc.engine import RunDir, fit, frozen, load_trained, trainer
from pamc.explain.cam import compute_cams
from pamc.explain.gap import attribution_gap
from pamc.zoo import method_params

log = logging.getLogger("study")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = REPO.parent / "shared" / "data" / "coco2017-mini"
CORE_ARMS = [
    Arm("full", "full", 1.0, 1.0),
    Arm("an", "an", 1.0, 1.0),
    Arm("an + BoostLU (inference)", "an", 1.0, BOOST_ALPHA, reuse="an"),
    Arm("ll-r", "ll-r", 1.0, 1.0),
    Arm("ll-r + BoostLU (inference)", "ll-r", 1.0, BOOST_ALPHA, reuse="ll-r"),
    Arm("ll-r + BoostLU", "ll-r", BOOST_ALPHA, BOOST_ALPHA),
]
FROZEN_METHODS = "ll-ct,ll-cp"


def extra_arms(methods: list[str]) -> list[Arm]:
    """The frozen sweep's further rows: each method alone, then each with BoostLU (alpha 5)."""
    return [Arm(m, m, 1.0, 1.0) for m in methods] + [Arm(f"{m} + BoostLU", m, BOOST_ALPHA, BOOST_ALPHA) for m in methods]


def _data_config(root: Path, size: int, cache_dir: Path) -> Any:
    return config_from_dict({"data": {"dataset": "coco2017", "root": str(root), "image_size": size,
                                      "cache_dir": str(cache_dir), "val_fraction": 0.2}}).data


def union_paths(root: Path, size: int, cache_dir: Path) -> list[str]:
    """The photos (relative to ``root``) in the row order of :func:`union_of_photos`."""
    cfg = _data_config(root, size, cache_dir)
    parsed = parse_dataset(cfg)
    train_pos, val_pos = split_indices(len(parsed.pool), cfg.val_fraction, cfg.split_seed)  # as assemble()
    pool = parsed.pool.paths
    return [pool[i] for i in train_pos] + [pool[i] for i in val_pos] + list(parsed.test.paths)


def union_of_photos(root: Path, size: int, cache_dir: Path) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """Class names, uint8 images (N, 3, S, S) and full labels (N, C) of train2017 + val2017."""
    bundle = build_dataset(_data_config(root, size, cache_dir))
    images, labels = [], []
    for split in (bundle.train, bundle.val, bundle.test):
        images.append(np.asarray(split.images[np.arange(len(split))]))
        labels.append(split.full_rows(np.arange(len(split))))
    return bundle.class_names, np.concatenate(images), np.concatenate(labels)


def fold_test_rows(n: int, folds: int, fold: int) -> np.ndarray:
    """The union rows that fold ``fold`` tests on (a fixed permutation, every ``folds``-th row)."""
    return np.sort(np.random.default_rng(0).permutation(n)[fold::folds])


def fold_bundle(names: tuple[str, ...], images: np.ndarray, full: np.ndarray, folds: int, fold: int,
                shared: "SharedFeatures | None" = None) -> DatasetBundle:
    """Fold ``fold`` as the test set; the rest 80/20 train/val with one observed positive each."""
    test_rows = fold_test_rows(len(full), folds, fold)
    rest = np.setdiff1d(np.arange(len(full)), test_rows)
    train_pos, val_pos = split_indices(len(rest), 0.2, 1200 + fold)
    train_rows, val_rows = rest[train_pos], rest[val_pos]

    def split(rows: np.ndarray, observed: np.ndarray) -> Split:
        out = Split(images[rows], full[rows], LabelStore(observed))
        if shared is not None:
            shared.register(images, out, rows)
        return out

    observed_train = observe(full[train_rows], 1, 0, 1200 + fold)
    return DatasetBundle("coco2017", names, split(train_rows, observed_train),
                         split(val_rows, full[val_rows]), split(test_rows, full[test_rows]))


class SharedFeatures:
    """``cache_frozen_features`` that computes the feature maps of every photo once and reuses them.

    Valid here because every frozen run of the study starts from the same ImageNet weights in
    eval mode, and the folds are row subsets of one image array (``rows_of`` maps a split's
    images back to their union rows).
    """

    def __init__(self) -> None:
        self.union: np.ndarray | None = None
        self.features: np.ndarray | None = None
        self.rows: dict[int, np.ndarray] = {}
        trainer.cache_frozen_features = self

    def register(self, union: np.ndarray, split: Split, rows: np.ndarray) -> None:
        self.union = union
        self.rows[id(split.images)] = rows

    def of(self, model: Any, split: Split, transform: DeviceTransform) -> np.ndarray:
        """The backbone's feature maps of ``split``'s photos, the images normalised by ``transform``."""
        if self.features is None:
            whole = Split(self.union, None, LabelStore(np.zeros((len(self.union), 1), dtype=np.int8)))
            self.features = frozen.compute_features(model, whole, transform)
        return self.features[self.rows[id(split.images)]]

    def __call__(self, model: Any, bundle: DatasetBundle, transform: Any) -> tuple[Any, DatasetBundle, Any]:
        frozen.set_backbone_trainable(model, False)
        cached = dataclasses.replace(bundle, **{n: dataclasses.replace(getattr(bundle, n), images=self.of(model, getattr(bundle, n), transform))
                                                for n in ("train", "val", "test")})
        return frozen.HeadOnCachedFeatures(model), cached, frozen.FeatureTransform(transform.device)


def gap_numbers(full_dir: Path, partial_dir: Path, split: Split, shared: "SharedFeatures | None" = None) -> dict[str, float]:
    """``pamc explain-gap``'s summary numbers for two trained runs on ``split``'s positives."""
    runs = [load_trained(d) for d in (full_dir, partial_dir)]
    labels = split.full_rows(np.arange(len(split)))
    rows, classes = np.nonzero(labels == 1)

    def raw_cams(run: Any) -> np.ndarray:  # normalised as the run trained
        if shared is None:
            return compute_cams(run.model, split.images, alpha=1.0, preprocess=run.preprocess).raw
        with torch.inference_mode():  # the head on the cached feature maps: the same raw CAMs
            features = shared.of(run.model, split, run.preprocess.transform())
            return run.model.head(torch.from_numpy(features).float()).numpy()

    cams = [raw_cams(r)[rows, classes] for r in runs]
    s = attribution_gap(cams[0], cams[1], alpha=BOOST_ALPHA).summary()
    top = s["attribution"]["top_mean"]
    return {"pairs": s["pairs"], "pearson": s["spatial"]["pearson"]["mean"],
            "top_iou": s["spatial"]["top_region_iou"]["mean"],
            "ratio_an": top["ratio_partial"], "ratio_an_boostlu": top["ratio_partial_boostlu"],
            "gap_closed": top["gap_closed"]}


def run_regime(regime: str, arms: list[Arm], base: Any, bundle: DatasetBundle, out: Path, fold: int,
               results: dict[str, Any], shared: "SharedFeatures | None" = None) -> None:
    """Train (or read back, or resume) ``arms`` on fold ``fold`` through :mod:`pamc.arms`; the
    fold is the seed, runs go to ``out/runs/<regime>/<arm>-seed<fold>``."""
    fn_rate = false_negative_rate(bundle.train.full, bundle.train.observed.to_numpy())
    delta_rel = ll_delta_rel_for(base.train.epochs, fn_rate)
    expected_pos = float((bundle.train.full == 1).sum(1).mean())
    scores = results.setdefault(regime, {})
    specs = plan(arms, [fold], base, out / "runs" / regime,
                 lambda method: method_params(method, base.train.epochs, delta_rel, expected_pos))
    initial = bundle.train.observed.state_dict()
    for spec in specs:  # an interrupted run is resumed here; run_arms then reads it back
        run = RunDir(spec.config.output_dir)
        if spec.reuse is None and run.has_last and not run.is_finished:
            log.info("resuming %s", run.path)
            bundle.train.observed.load_state_dict(initial)
            fit(spec.config, dataset=bundle, callbacks=(), resume=True)
    bundle.train.observed.load_state_dict(initial)
    trained: dict[str, Path] = {}
    for spec, result in zip(specs, run_arms(specs, dataset=bundle)):
        scores.setdefault(spec.arm, {})[str(fold)] = result.test_map
        if spec.reuse is None:
            trained[spec.arm] = Path(spec.config.output_dir)
        log.info("%s fold %d %s: test mAP %.2f", regime, fold, spec.arm, result.test_map)
    gaps = results.setdefault(f"{regime}_gap", {})
    if "full" in trained and "an" in trained and str(fold) not in gaps:
        gaps[str(fold)] = gap_numbers(trained["full"], trained["an"], bundle.test, shared)


def paired(scores: dict[str, dict[str, float]], a: str, b: str) -> list[float]:
    folds = sorted(set(scores.get(a, {})) & set(scores.get(b, {})), key=int)
    return [scores[a][f] - scores[b][f] for f in folds]


def describe(values: list[float]) -> str:
    v = np.asarray(values, dtype=float)
    return f"{v.mean():.2f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.2f}"


def report(results: dict[str, Any], args: argparse.Namespace, timing: dict[str, float]) -> str:
    lines = [f"coco2017-mini, {args.folds} folds over 444 photos, efficientnet_lite0 ImageNet weights, "
             "one observed positive per training image; test mAP (%), mean ± sample std over folds.", ""]
    for regime, size, epochs in (("finetune", args.ft_size, args.ft_epochs), ("frozen", args.frozen_size, args.frozen_epochs)):
        scores = results.get(regime, {})
        if not scores:
            continue
        lines += [f"### {regime} ({size} px, {epochs} epochs)", "", "| arm | mAP | folds | AN -> arm (paired) |",
                  "|---|---|---|---|"]
        for arm, by_fold in scores.items():
            vals = [by_fold[f] for f in sorted(by_fold, key=int)]
            diff = paired(scores, arm, "an") if arm not in ("an", "full") else []
            d = f"{describe(diff)} ({sum(x > 0 for x in diff)}/{len(diff)} up)" if diff else ""
            lines.append(f"| {arm} | {describe(vals)} | {len(vals)} | {d} |")
        lines.append("")
        claims = [
            ("C2: an + BoostLU (inference) > an", paired(scores, "an + BoostLU (inference)", "an")),
            ("C3: ll-r + BoostLU > ll-r", paired(scores, "ll-r + BoostLU", "ll-r")),
            ("C3: ll-r + BoostLU > an", paired(scores, "ll-r + BoostLU", "an")),
            ("ll-r + BoostLU (inference) > ll-r", paired(scores, "ll-r + BoostLU (inference)", "ll-r")),
        ]
        for name, diff in claims:
            if diff:
                per = ", ".join(f"{x:+.2f}" for x in diff)
                lines.append(f"- {name}: {describe(diff)} points, holds in {sum(x > 0 for x in diff)}/{len(diff)} folds ({per})")
        gaps = results.get(f"{regime}_gap", {})
        if gaps:
            g = {k: [gaps[f][k] for f in sorted(gaps, key=int)] for k in next(iter(gaps.values()))}
            lower = sum(r < 1 for r in g["ratio_an"])
            lines.append(f"- C1 (full vs AN CAMs on the test positives, {int(np.mean(g['pairs']))} pairs per fold): "
                         f"CAM correlation {describe(g['pearson'])}, top-20% IoU {describe(g['top_iou'])}; "
                         f"AN/full attribution (top-region mean) {describe(g['ratio_an'])}, below 1 in {lower}/{len(g['ratio_an'])} folds; "
                         f"with BoostLU {describe(g['ratio_an_boostlu'])}; share of the gap closed {describe(g['gap_closed'])}")
        lines.append("")
    lines.append(f"Time: {timing['wall_s'] / 60:.1f} min wall, {timing['cpu_s'] / 60:.1f} min CPU "
                 f"(process time, all threads, summed over {int(timing['invocations'])} process runs, some of them in parallel); "
                 f"torch threads {torch.get_num_threads()}.")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default=str(DEFAULT_ROOT))
    p.add_argument("--out", default="runs/study-coco-mini")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--ft-size", type=int, default=128)
    p.add_argument("--ft-epochs", type=int, default=3)
    p.add_argument("--frozen-size", type=int, default=224)
    p.add_argument("--frozen-epochs", type=int, default=10)
    p.add_argument("--methods", default=FROZEN_METHODS, help="methods of the frozen-feature sweep")
    p.add_argument("--regimes", default="frozen,finetune")
    p.add_argument("--only-folds", help="comma list of the folds this process runs (default: all)")
    p.add_argument("--threads", type=int, help="torch threads of this process")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stdout)
    logging.getLogger("pamc").setLevel(logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    t_wall, t_cpu = time.time(), time.process_time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    only = sorted({int(f) for f in args.only_folds.split(",")}) if args.only_folds else list(range(args.folds))
    # one state file per (regimes, folds) invocation, so that several processes can share the folds
    state_file = out / f"state-{args.regimes.replace(',', '+')}-folds{'+'.join(map(str, only))}.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    results: dict[str, Any] = state.get("results", {})
    timing = state.get("timing", {"wall_s": 0.0, "cpu_s": 0.0, "invocations": 0})

    def save() -> None:
        now = {"wall_s": timing["wall_s"] + time.time() - t_wall, "cpu_s": timing["cpu_s"] + time.process_time() - t_cpu,
               "invocations": timing["invocations"] + 1}
        state_file.write_text(json.dumps({"args": vars(args), "results": results, "timing": now}, indent=2))
        write_report(out, args)

    base_train = {"batch_size": 16, "head_lr_mult": 10.0, "device": "cpu", "select_on": "full"}
    regimes = {
        "frozen": (args.frozen_size, extra_arms([m.strip() for m in args.methods.split(",") if m.strip()]),
                   {**base_train, "epochs": args.frozen_epochs, "lr": 1e-3, "frozen_features": True, "batch_size": 32}),
        "finetune": (args.ft_size, [], {**base_train, "epochs": args.ft_epochs, "lr": 1e-4, "head_lr_mult": 100.0}),
    }
    for regime in [r.strip() for r in args.regimes.split(",")]:
        size, arms, train = regimes[regime]
        names, images, full = union_of_photos(Path(args.data_root), size, out / "cache")
        base = config_from_dict({"data": {"dataset": "coco2017", "image_size": size},
                                 "model": {"backbone": "efficientnet_lite0", "pretrained": "imagenet"},
                                 "train": train})
        shared = SharedFeatures() if regime == "frozen" else None
        # the core arms on every fold first, then the frozen sweep's further rows
        for phase in [CORE_ARMS] + ([arms] if regime == "frozen" else []):
            for fold in only:
                bundle = fold_bundle(names, images, full, args.folds, fold, shared)
                run_regime(regime, phase, replace(base, train__seed=fold), bundle, out, fold, results, shared)
                save()
                log.info("%s fold %d done (%d arms)", regime, fold, len(phase))
    save()
    print((out / "results.md").read_text())
    return 0


def merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    for key, value in b.items():
        a[key] = merge(a.get(key, {}), value) if isinstance(value, dict) else value
    return a


def write_report(out: Path, args: argparse.Namespace) -> None:
    """``results.md`` from every state file in ``out`` (the folds may come from several processes)."""
    results: dict[str, Any] = {}
    timing = {"wall_s": 0.0, "cpu_s": 0.0, "invocations": 0}
    for path in sorted(out.glob("state-*.json")):
        state = json.loads(path.read_text())
        merge(results, state["results"])
        for key in timing:
            timing[key] += state["timing"][key]
    (out / "results.json").write_text(json.dumps({"results": results, "timing": timing}, indent=2))
    (out / "results.md").write_text(report(results, args, timing))


if __name__ == "__main__":
    raise SystemExit(main())
