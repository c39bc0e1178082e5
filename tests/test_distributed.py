import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from pamc.config import load_config
from pamc.data import LabelStore, Split, build_dataset
from pamc.engine.distributed import (
    DistContext, ShardedLoader, eval_shard, evaluate_gathered, label_store_digest, local_batch_size,
    run_on_main, sync_label_updates,
)
from pamc.errors import ConfigError, PamcError
from pamc.evaluation import MultiLabelEvaluator, average_precision

SRC = str(Path(__file__).resolve().parents[1] / "src")


def run_torchrun(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node=2 ARGS``; the whole process group dies on timeout."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd,
                          start_new_session=True) as popen:
        try:
            out, err = popen.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(popen.pid, signal.SIGKILL)
            popen.communicate()
            raise
    return subprocess.CompletedProcess(cmd, popen.returncode, out, err)


def tiny_split(n: int) -> Split:
    return Split(np.zeros((n, 3, 4, 4), dtype=np.uint8), None, LabelStore(np.zeros((n, 3), dtype=np.int8)))


@pytest.mark.parametrize("n", [20, 21])
def test_sharded_loader_gives_disjoint_covering_shards_redrawn_each_epoch(n):
    split = tiny_split(n)
    loaders = [ShardedLoader(split, 4, DistContext(rank=r, world_size=2), seed=3) for r in range(2)]
    orders = {}
    for epoch in (1, 2):
        shards = []
        for loader in loaders:
            loader.set_epoch(epoch)
            shards.append(torch.cat([b.index for b in loader]).tolist())
        assert len(shards[0]) == len(shards[1]) == -(-n // 2)  # padded to equal length
        union = shards[0] + shards[1]
        assert sorted(set(union)) == list(range(n))
        assert len(union) - len(set(union)) == (n % 2)  # only the padding repeats
        orders[epoch] = union
    assert orders[1] != orders[2]
    again = ShardedLoader(split, 4, DistContext(rank=0, world_size=2), seed=3)
    again.set_epoch(2)
    assert torch.cat([b.index for b in again]).tolist() == orders[2][: -(-n // 2)]


def test_eval_shards_are_disjoint_and_unpadded():
    parts = [eval_shard(7, DistContext(rank=r, world_size=3)) for r in range(3)]
    assert sorted(np.concatenate(parts).tolist()) == list(range(7))


def test_batch_size_is_global_and_must_divide():
    assert local_batch_size(16, DistContext(rank=0, world_size=4)) == 4
    with pytest.raises(ConfigError, match="divisible"):
        local_batch_size(10, DistContext(rank=1, world_size=4))


def test_single_process_helpers_are_identity():
    rows, cols = torch.tensor([1, 2]), torch.tensor([0, 1])
    assert sync_label_updates(rows, cols, DistContext()) == (rows, cols)
    with pytest.raises(PamcError, match="boom"):
        run_on_main(lambda: (_ for _ in ()).throw(PamcError("boom")), DistContext())


def _worker(rank: int, world: int, store_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store_file}", rank=rank, world_size=world)
    ctx = DistContext(rank=rank, world_size=world)
    result = {}
    # label corrections: rank 0 corrects two entries, rank 1 one entry, then nothing
    store = LabelStore(np.zeros((6, 5), dtype=np.int8))
    local = {0: ([1, 3], [2, 4]), 1: ([5], [0])}[rank]
    rows, cols = sync_label_updates(torch.tensor(local[0]), torch.tensor(local[1]), ctx)
    store.set_positive(rows, cols)
    result["pairs"] = list(zip(rows.tolist(), cols.tolist()))
    empty = sync_label_updates(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), ctx)
    result["empty"] = empty[0].numel()
    result["labels"] = store.to_numpy().tolist()
    result["digest"] = label_store_digest(store)
    # evaluation: each rank scores half of a fixed matrix
    rng = np.random.default_rng(0)
    scores = rng.random((30, 4), dtype=np.float32)
    labels = np.where(rng.random((30, 4)) < 0.3, 1, -1).astype(np.int8)
    evaluator = MultiLabelEvaluator(4)
    for start in range(0, 30, 4):
        idx = eval_shard(30, ctx)[start // 4 * 2: start // 4 * 2 + 2]
        if len(idx):
            evaluator.process(scores[idx], labels[idx])
    result["eval"] = evaluate_gathered(evaluator, ctx)
    # the streamed path (ignore_unobserved keeps only annotated entries), with the group mAP
    partial = np.where(rng.random((30, 4)) < 0.5, 0, labels).astype(np.int8)
    sparse = MultiLabelEvaluator(4, ignore_unobserved=True, class_frequency=np.array([3, 1, 2, 0]), num_groups=2)
    shard = eval_shard(30, ctx)
    for start in range(0, len(shard), 4):
        rows = shard[start:start + 4]
        sparse.process(torch.from_numpy(scores[rows]), torch.from_numpy(partial[rows]))
    result["sparse_eval"] = evaluate_gathered(sparse, ctx)
    # a user error on rank 0 reaches every rank
    try:
        run_on_main(lambda: (_ for _ in ()).throw(PamcError("output exists")), ctx)
    except PamcError as exc:
        result["error"] = str(exc)
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


def test_label_updates_and_metrics_are_synchronised_across_two_processes(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    expected = np.zeros((6, 5), dtype=np.int8)
    expected[[1, 3, 5], [2, 4, 0]] = 1
    for res in results:
        assert res["pairs"] == [[1, 2], [3, 4], [5, 0]]  # rank order, same on every rank
        assert res["empty"] == 0
        assert np.array_equal(np.array(res["labels"], dtype=np.int8), expected)
        assert res["digest"] == hashlib.sha1(expected.tobytes()).hexdigest()
        assert res["error"] == "output exists"
    rng = np.random.default_rng(0)
    scores = rng.random((30, 4), dtype=np.float32)
    labels = np.where(rng.random((30, 4)) < 0.3, 1, -1).astype(np.int8)
    ap = average_precision(scores, labels) * 100
    for res in results:
        assert res["eval"]["num_samples"] == 30
        np.testing.assert_allclose(res["eval"]["ap"], ap, atol=1e-9)
    assert results[0]["eval"] == results[1]["eval"]
    partial = np.where(rng.random((30, 4)) < 0.5, 0, labels).astype(np.int8)
    sparse_ap = average_precision(scores, partial, ignore_unobserved=True)
    for res in results:
        assert res["sparse_eval"]["num_samples"] == 30
        np.testing.assert_allclose(res["sparse_eval"]["ap"], sparse_ap * 100, atol=1e-9)
        np.testing.assert_allclose(res["sparse_eval"]["group_map"],
                                   [100 * sparse_ap[[3, 1]].mean(), 100 * sparse_ap[[2, 0]].mean()], atol=1e-9)
    assert results[0]["sparse_eval"] == results[1]["sparse_eval"]


def _loss_case() -> dict[str, torch.Tensor]:
    """A global batch of 8 whose first half (rank 0's) has far larger unobserved losses."""
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(8, 5, generator=g)
    logits[:4] += 2.0
    observed = torch.zeros(8, 5, dtype=torch.int8)
    observed[torch.arange(8), torch.arange(8) % 5] = 1
    return {"logits": logits, "observed": observed, "index": torch.arange(8)}


def _state_worker(rank: int, world: int, store_file: str, out_dir: str) -> None:
    from pamc.engine.distributed import ProcessGroupCollective
    from pamc.losses import create_loss

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store_file}", rank=rank, world_size=world)
    ctx = DistContext(rank=rank, world_size=world)
    case = _loss_case()
    mine = slice(4 * rank, 4 * rank + 4)
    logits, observed, index = case["logits"][mine], case["observed"][mine], case["index"][mine]
    result = {}
    for name in ("ll-r", "ll-cp"):  # global top-k: selections of the global batch
        loss = create_loss(name, delta_rel=30.0)
        loss.bind_collective(ProcessGroupCollective(ctx))
        loss.on_epoch_start(2)
        out = loss(logits, observed, index)
        matrix = F.binary_cross_entropy_with_logits(logits, (observed == 1).float(), reduction="none")
        kept = out.loss * logits.numel()  # LL-R: the sum of the kept entries
        result[name] = {"loss_sum": float(kept), "all": float(matrix.sum()),
                        "corrections": None if out.corrections is None else out.corrections.tolist()}
    torch.manual_seed(0)  # the same initial estimates on every rank
    role = create_loss("role", expected_num_pos=1.5)
    role.bind(LabelStore(case["observed"].numpy()), 3)
    role.bind_collective(ProcessGroupCollective(ctx))
    role(logits, observed, index).loss.backward()
    role.sync_gradients()
    result["role_grad"] = role.label_logits.grad.tolist()
    apl = create_loss("em-apl", alpha=0.1, beta=0.5, warmup_epochs=1)
    apl.bind(LabelStore(case["observed"].numpy()), 3)
    apl.bind_collective(ProcessGroupCollective(ctx))
    apl.on_epoch_start(1)
    apl(logits, observed, index)
    apl.on_epoch_end(1)
    result["apl_mask"] = apl.pseudo_mask.tolist()
    result["apl_probs"] = apl.last_probs.tolist()
    Path(out_dir, f"state{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


def test_loss_state_spans_both_ranks_like_one_process_on_the_global_batch(tmp_path):
    from pamc.losses import create_loss

    mp.spawn(_state_worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"state{r}.json").read_text()) for r in range(2)]
    case = _loss_case()
    # LL: one process on the global batch selects k = ceil(40 * 0.3) = 12 entries in all
    for name in ("ll-r", "ll-cp"):
        single = create_loss(name, delta_rel=30.0)
        single.on_epoch_start(2)
        out = single(case["logits"], case["observed"], case["index"])
        if name == "ll-cp":
            both = torch.tensor(ranks[0][name]["corrections"] + ranks[1][name]["corrections"])
            assert torch.equal(both, out.corrections)
            assert int(both.sum()) == 12 and int(both[:4].sum()) != 6  # not 6 per rank
        else:
            total = ranks[0][name]["loss_sum"] + ranks[1][name]["loss_sum"]
            assert total == pytest.approx(float(out.loss) * 40, rel=1e-6)
    # ROLE: every rank holds the mean of the ranks' gradients (each nonzero on its own rows)
    expected = torch.zeros(8, 5)
    for rank in range(2):
        torch.manual_seed(0)
        role = create_loss("role", expected_num_pos=1.5)
        role.bind(LabelStore(case["observed"].numpy()), 3)
        mine = slice(4 * rank, 4 * rank + 4)
        role(case["logits"][mine], case["observed"][mine], case["index"][mine]).loss.backward()
        expected += role.label_logits.grad / 2
    for res in ranks:
        torch.testing.assert_close(torch.tensor(res["role_grad"]), expected, rtol=1e-6, atol=1e-8)
    # APL: pseudo-labels from every image's prediction, as in one process
    single = create_loss("em-apl", alpha=0.1, beta=0.5, warmup_epochs=1)
    single.bind(LabelStore(case["observed"].numpy()), 3)
    single.on_epoch_start(1)
    single(case["logits"], case["observed"], case["index"])
    single.on_epoch_end(1)
    assert single.pseudo_mask.any()
    for res in ranks:
        assert torch.equal(torch.tensor(res["apl_mask"]), single.pseudo_mask)
        torch.testing.assert_close(torch.tensor(res["apl_probs"]), single.last_probs)


@pytest.mark.slow
def test_torchrun_two_process_training_end_to_end(tmp_path):
    run = tmp_path / "run"
    work = tmp_path / "cwd"
    work.mkdir()
    flags = ["--epochs", "3", "--batch-size", "16", "--lr", "0.003", "--method", "ll-cp",
             "--set", "method.params.delta_rel=2.0", "--set", "data.synthetic.num_train=80",
             "--set", "data.synthetic.num_test=40", "--set", "data.synthetic.image_size=32"]
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    proc = run_torchrun(["-m", "pamc", "train", *flags, "--no-progress", "--output-dir", str(run)], env, work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("test mAP") == 1  # only rank 0 reports
    # only rank 0 writes: one set of files, each metrics line once, nothing else anywhere
    names = sorted(p.name for p in run.iterdir())
    states = [n for n in names if n.startswith("last.state-") and n.endswith(".pt")]
    assert len(states) == 1
    assert [n for n in names if n not in states] == [  # .pamc.lock: the run directory's ownership mark
        ".pamc.lock", "best.safetensors", "config.yaml", "last.safetensors", "metrics.jsonl", "test_results.json"]
    assert list(work.iterdir()) == []
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    assert all(e["world_size"] == 2 for e in epochs)
    # LL-Cp from epoch 2: each rank's local batch of 8 x 10 corrects ceil(80 * 2%) = 2 entries,
    # 4 steps per rank, and every rank applies both ranks' corrections: 2 * 4 * 2 = 16
    assert [e["corrected_labels"] for e in epochs] == [0, 16, 16]
    digests = [e["label_digests"] for e in epochs]
    assert all(len(d) == 2 and d[0] == d[1] for d in digests)  # same corrected labels on both ranks
    cfg = load_config(None, {"data.synthetic.num_train": 80, "data.synthetic.num_test": 40,
                             "data.synthetic.image_size": 32})
    initial = build_dataset(cfg.data).train.observed
    assert digests[0][0] == label_store_digest(initial)  # epoch 1 corrects nothing
    assert len({d[0] for d in digests}) == 3  # epochs 2 and 3 changed the labels
    results = json.loads((run / "test_results.json").read_text())
    assert 0 <= results["test_map"] <= 100 and results["best_epoch"] >= 1


def test_evaluator_extend_merges_shards_without_copying():
    rng = np.random.default_rng(1)
    scores = rng.random((12, 3), dtype=np.float32)
    labels = np.where(rng.random((12, 3)) < 0.4, 1, -1).astype(np.int8)
    parts = [MultiLabelEvaluator(3) for _ in range(2)]
    for r, part in enumerate(parts):
        part.process(scores[r::2], labels[r::2])
    parts[0].extend(parts[1])
    assert parts[0].num_samples == 12
    np.testing.assert_allclose(parts[0].evaluate()["ap"], average_precision(scores, labels) * 100, atol=1e-12)
    with pytest.raises(ValueError, match="merge"):
        parts[0].extend(MultiLabelEvaluator(4))


@pytest.mark.slow
def test_torchrun_two_processes_evaluate_openimages_over_the_sparse_labels(tmp_path):
    """Sparse val/test labels, streamed evaluation, gathered over 2 ranks: the dense test AP."""
    from dataset_fixtures import make_openimages
    from pamc.data import ArrayLoader, DeviceTransform
    from pamc.engine import load_checkpoint, restore_model
    from pamc.engine.trainer import predict

    truth = make_openimages(tmp_path / "oi", n_train=40, n_test=25)["test"][1]
    flags = {"data.dataset": "openimages-v3", "data.root": str(tmp_path / "oi"), "data.image_size": 32,
             "data.cache_dir": str(tmp_path / "c"), "data.label_store": "sparse"}
    bundle = build_dataset(load_config(None, flags).data)  # builds the image cache once, before the ranks start
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    sets = [arg for key, value in flags.items() for arg in ("--set", f"{key}={value}")]
    proc = run_torchrun(["-m", "pamc", "train", *sets, "--epochs", "2", "--batch-size", "8", "--no-progress",
                         "--output-dir", str(run)], env, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((run / "test_results.json").read_text())
    model = restore_model(load_checkpoint(run / "best.safetensors"), run / "best.safetensors")
    scores = predict(model, ArrayLoader(bundle.test, 64), DeviceTransform(torch.device("cpu")))
    ap = average_precision(scores, truth, ignore_unobserved=True)
    np.testing.assert_allclose(list(results["test_ap"].values()), ap * 100, rtol=0, atol=1e-6)
    assert len(results["test_group_map"]) == 5
