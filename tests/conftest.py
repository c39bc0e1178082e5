import os

# A fixed thread count for the whole suite (its subprocesses included): `train.threads: auto`
# then takes it instead of counting the machine's other runnable processes, so a training's
# sums, and the values the tests compare, do not depend on how busy the machine is.
os.environ.setdefault("OMP_NUM_THREADS", str(min(2, os.cpu_count() or 1)))

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def tiny_train_args(tmp_path):
    """CLI flags for a seconds-long training run on a tiny synthetic set."""
    return [
        "train", "--epochs", "2", "--batch-size", "16", "--lr", "0.003",
        "--set", "data.synthetic.num_train=80", "--set", "data.synthetic.num_test=40",
        "--set", "data.synthetic.image_size=32", "--no-progress",
        "--output-dir", str(tmp_path / "run"),
    ]
