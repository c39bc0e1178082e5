"""Datasets, label matrices, observation and batching."""

from pamc.data.datasets import DATASETS, DatasetBundle, Split, build_dataset, split_indices
from pamc.data.labels import LabelStore, check_label_values, observe
from pamc.data.loader import ArrayLoader, Batch, DeviceTransform
from pamc.data.synthetic import SyntheticScenes, make_scenes
from pamc.data.sparse_labels import SparseLabelStore, label_store_from_state
from pamc.data import adapters  # noqa: E402,F401  (registers the real-dataset adapters)

__all__ = [
    "DATASETS", "DatasetBundle", "Split", "build_dataset", "split_indices", "LabelStore",
    "check_label_values", "observe", "ArrayLoader", "Batch", "DeviceTransform",
    "SyntheticScenes", "make_scenes", "SparseLabelStore", "label_store_from_state",
]
