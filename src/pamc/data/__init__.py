"""Datasets, label matrices, observation and batching."""

from pamc.data.catalog import DATASETS, DatasetInfo, build_dataset, dataset_info
from pamc.data.datasets import DatasetBundle, Split, split_indices
from pamc.data.labels import LabelStore, check_label_values, observe
from pamc.data.loader import ArrayLoader, Batch, DeviceTransform
from pamc.data.preprocess import Preprocess, preprocess_for
from pamc.data.synthetic import SyntheticScenes, make_scenes
from pamc.data.sparse_labels import SparseLabelStore, label_store_from_state
from pamc.data import adapters  # noqa: E402,F401  (registers the real-dataset adapters)

__all__ = [
    "DATASETS", "DatasetInfo", "dataset_info", "DatasetBundle", "Split", "build_dataset", "split_indices", "LabelStore",
    "check_label_values", "observe", "ArrayLoader", "Batch", "DeviceTransform", "Preprocess", "preprocess_for",
    "SyntheticScenes", "make_scenes", "SparseLabelStore", "label_store_from_state",
]
