"""The dataset catalog: one registry of datasets, each with its reader and its metadata.

An entry (:class:`DatasetInfo`) is what pamc knows about a dataset before reading it (the
detectron2 ``MetadataCatalog`` idea): its class names or where they come from, its default
image size and normalisation, whether its test labels are only partly annotated, whether its
class frequencies are computed from the training labels (for frequency-group mAPs), and the
per-dataset defaults of the methods that the papers tune per dataset. Readers register
themselves: the adapters through :func:`pamc.data.adapters.common.adapter`, the synthetic
scenes in :mod:`pamc.data.datasets`; :data:`METADATA` holds the facts, and a reader without a
catalog entry is refused at import.

Sources of the method defaults:

* ``expected_num_pos`` (EPR, ROLE): the ``lookup['expected_num_pos']`` table of the authors'
  code of Cole et al., "Multi-Label Learning from Single Positive Labels", CVPR 2021
  (elijahcole/single-positive-multi-label, ``train.py``): pascal 1.5, coco 2.9, nuswide 1.9,
  cub 31.4 (the average number of positives per training image). VOC 2007 has 1.46 positives
  per trainval image (difficult counted absent, as that count does), which rounds to the same
  1.5; COCO 2017 has the images of COCO 2014, so it takes coco's 2.9.
* ``em_alpha``, ``apl_beta``, ``apl_warmup_epochs``, ``apl_neg_proportion`` (EM, EM+APL): the
  per-dataset settings in ``main.py`` of Zhou et al., "Acknowledging the Unknown for
  Multi-label Learning with Single Positive Labels", ECCV 2022
  (Correr-Zhou/SPML-AckTheUnknown). VOC 2007 takes their VOC 2012 settings, COCO 2017 their
  COCO settings.
* OpenImages V3 and ``csv`` have no published values. Their expected number of positives is
  derived from their own training labels (the mean number of positive labels per training
  image: the true value when the labels are complete, a lower bound when they are partial,
  which is logged), and EM/APL take the COCO settings (the large-scale setting of Zhou et al.).
* ``synthetic`` is pamc's own scene generator: its expected number of positives is the mean
  object count of the default config (1-4 objects, uniform), and EM/APL use the VOC settings.

Explicit ``method.params`` always win over these defaults (:func:`resolve_method_params`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace as dc_replace
from typing import TYPE_CHECKING, Any

from pamc.config import DataConfig, RunConfig, replace
from pamc.errors import ConfigError, DataError
from pamc.models.backbones import IMAGENET_INPUT, input_spec
from pamc.registry import Registry

if TYPE_CHECKING:
    from pamc.data.adapters.common import ParsedDataset
    from pamc.data.datasets import DatasetBundle, Split

log = logging.getLogger(__name__)

Triple = tuple[float, float, float]
DEFAULT_IMAGE_SIZE = 448  # the papers' resolution for every real dataset
DERIVED = None  # a method default computed from the dataset's own training labels

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)


@dataclass(frozen=True)
class MethodDefaults:
    """Method hyperparameters that the papers tune per dataset (see the module docstring).

    ``expected_num_pos`` None (:data:`DERIVED`) means: the mean number of positive labels per
    image of the training split.
    """

    expected_num_pos: float | None
    em_alpha: float
    apl_beta: float
    apl_warmup_epochs: int
    apl_neg_proportion: float = 0.9

    def params(self, method: str, expected_num_pos: float | None = None) -> dict[str, Any]:
        """The defaults of ``method`` ({} for a method with no per-dataset setting)."""
        if method in ("epr", "role", "role-li"):
            value = self.expected_num_pos if self.expected_num_pos is not None else expected_num_pos
            return {} if value is None else {"expected_num_pos": value}
        if method == "em":
            return {"alpha": self.em_alpha}
        if method == "em-apl":
            return {"alpha": self.em_alpha, "beta": self.apl_beta, "warmup_epochs": self.apl_warmup_epochs,
                    "neg_proportion": self.apl_neg_proportion}
        return {}


_VOC = MethodDefaults(expected_num_pos=1.5, em_alpha=0.2, apl_beta=0.02, apl_warmup_epochs=5)
_COCO = MethodDefaults(expected_num_pos=2.9, em_alpha=0.1, apl_beta=0.9, apl_warmup_epochs=5)


@dataclass(frozen=True)
class DatasetMetadata:
    """The facts of one dataset.

    ``class_names`` None: read from the data, as ``class_source`` says. ``image_size`` None:
    the synthetic scenes, whose size is ``data.synthetic.image_size``. ``mean``/``std`` are the
    dataset's default normalisation (0..1 pixel units), used when neither the config nor the
    backbone gives one. ``frequency_groups``: evaluation also reports 5 frequency-group mAPs,
    the classes grouped by their number of positives in the training split.
    """

    num_classes: int | None
    class_names: tuple[str, ...] | None
    class_source: str
    image_size: int | None = DEFAULT_IMAGE_SIZE
    mean: Triple = IMAGENET_INPUT.mean
    std: Triple = IMAGENET_INPUT.std
    partial_test_labels: bool = False
    frequency_groups: bool = False
    method_defaults: MethodDefaults = _VOC


METADATA: dict[str, DatasetMetadata] = {
    "synthetic": DatasetMetadata(
        None, None, "class_0 .. class_{K-1}, K = data.synthetic.num_classes", image_size=None,
        method_defaults=MethodDefaults(expected_num_pos=2.5, em_alpha=0.2, apl_beta=0.02, apl_warmup_epochs=5)),
    "voc2007": DatasetMetadata(20, VOC_CLASSES, "the 20 PASCAL VOC classes", method_defaults=_VOC),
    "voc2012": DatasetMetadata(20, VOC_CLASSES, "the 20 PASCAL VOC classes", method_defaults=_VOC),
    "coco2014": DatasetMetadata(80, None, "the categories of annotations/instances_train2014.json, by id",
                                method_defaults=_COCO),
    "coco2017": DatasetMetadata(80, None, "the categories of annotations/instances_train2017.json, by id",
                                method_defaults=_COCO),
    "coco": DatasetMetadata(80, None, "the categories of annotations/instances_train{2014,2017}.json (the "
                            "layout the root holds), by id", method_defaults=_COCO),
    "nuswide": DatasetMetadata(81, None, "Concepts81.txt, else the official label file names",
                               method_defaults=MethodDefaults(expected_num_pos=1.9, em_alpha=0.1, apl_beta=0.2,
                                                              apl_warmup_epochs=4)),
    "cub": DatasetMetadata(312, None, "attributes.txt (the 312 CUB attributes)",
                           method_defaults=MethodDefaults(expected_num_pos=31.4, em_alpha=0.01, apl_beta=0.4,
                                                          apl_warmup_epochs=3)),
    "openimages-v3": DatasetMetadata(
        5000, None, "classes-trainable.txt, named by class-descriptions.csv", partial_test_labels=True,
        frequency_groups=True, method_defaults=dc_replace(_COCO, expected_num_pos=DERIVED)),
    "csv": DatasetMetadata(
        None, None, "classes.txt next to the CSV, else the sorted union of the names in it",
        partial_test_labels=True, method_defaults=dc_replace(_COCO, expected_num_pos=DERIVED)),
}


@dataclass(frozen=True)
class DatasetInfo:
    """A catalog entry: the dataset's metadata and its reader.

    ``build(cfg)`` returns the :class:`~pamc.data.DatasetBundle`; ``parse(cfg)`` (the adapters
    only) returns the :class:`~pamc.data.adapters.ParsedDataset` before images are decoded.
    Calling the entry builds the dataset.
    """

    name: str
    metadata: DatasetMetadata
    build: Callable[[DataConfig], DatasetBundle]
    parse: Callable[[DataConfig], ParsedDataset] | None = None

    def __call__(self, cfg: DataConfig) -> DatasetBundle:
        return self.build(cfg)


DATASETS: Registry[DatasetBundle] = Registry("dataset")


def register_dataset(name: str, build: Callable[[DataConfig], DatasetBundle],
                     parse: Callable[[DataConfig], ParsedDataset] | None = None) -> DatasetInfo:
    """Add the reader of ``name`` to :data:`DATASETS`, with its entry in :data:`METADATA`."""
    if name not in METADATA:
        raise ValueError(f"dataset {name!r} has no entry in pamc.data.catalog.METADATA")
    info = DatasetInfo(name, METADATA[name], build, parse)
    DATASETS.register(name)(info)
    return info


def dataset_info(name: str) -> DatasetInfo:
    """The catalog entry of ``name`` (a :class:`~pamc.errors.RegistryError` names the choices)."""
    return DATASETS.get(name)  # type: ignore[return-value]


def parser(name: str) -> Callable[[DataConfig], ParsedDataset]:
    """The adapter that parses ``name`` (a :class:`DataError` for a generated dataset)."""
    parse = dataset_info(name).parse
    if parse is None:
        raise DataError(f"dataset {name!r} is generated, not read from files: there is nothing to parse")
    return parse


def build_dataset(cfg: DataConfig) -> DatasetBundle:
    """Build the dataset named by ``cfg.dataset``; warns about classes its val/test splits cannot score."""
    from pamc.data.scoring import warn_unscorable

    bundle = dataset_info(cfg.dataset).build(cfg)
    warn_unscorable(bundle)
    return bundle


def positives_per_image(split: Split) -> float:
    """The mean number of positive observed labels per image of ``split``."""
    from pamc.data.sparse_labels import SparseLabelStore

    store = split.observed
    positives = int(store.class_counts().sum()) if isinstance(store, SparseLabelStore) \
        else int((store.to_numpy() == 1).sum())
    return positives / max(len(store), 1)


def dataset_params(method: str, dataset: str) -> dict[str, Any]:
    """The catalog's defaults of ``method`` on ``dataset`` that need no data ({} if none apply)."""
    meta = METADATA.get(dataset)
    return {} if meta is None else meta.method_defaults.params(method)


def resolve_method_params(method: str, dataset: str, params: Mapping[str, Any],
                          train: Split | None = None) -> dict[str, Any]:
    """The catalog's defaults of ``method`` on ``dataset``, overlaid with the explicit ``params``.

    A default derived from the training labels needs the training split ``train``; a dataset
    that is not in the catalog gets no defaults.
    """
    if dataset not in METADATA:
        return dict(params)
    defaults = METADATA[dataset].method_defaults
    derived = None
    if defaults.expected_num_pos is None and train is not None and "expected_num_pos" not in params \
            and method in ("epr", "role", "role-li"):
        derived = round(positives_per_image(train), 3)
        log.info("%s: expected_num_pos = %.3f, the mean positives per training image (a lower bound if "
                 "the labels are partial; set method.params.expected_num_pos to override)", dataset, derived)
    return {**defaults.params(method, derived), **dict(params)}


def default_image_size(cfg: DataConfig) -> int:
    """``data.image_size``, else the dataset's default (the synthetic scenes' own size)."""
    if cfg.image_size is not None:
        return cfg.image_size
    meta = dataset_info(cfg.dataset).metadata
    return cfg.synthetic.image_size if meta.image_size is None else meta.image_size


def normalisation(cfg: RunConfig) -> tuple[Triple, Triple]:
    """(mean, std) of a run: explicit ``data.mean``/``data.std`` > the backbone's declared input
    spec > the dataset's default."""
    spec = input_spec(cfg.model.backbone)
    meta = dataset_info(cfg.data.dataset).metadata
    mean = cfg.data.mean or (spec.mean if spec is not None else meta.mean)
    std = cfg.data.std or (spec.std if spec is not None else meta.std)
    return tuple(mean), tuple(std)  # type: ignore[return-value]


def resolve_data_facts(cfg: RunConfig, bundle: DatasetBundle) -> RunConfig:
    """``cfg`` with the facts a trained run needs written in: the image size and normalisation
    it trains with, and the catalog's method defaults merged into ``method.params``.

    Resolving a resolved config changes nothing, so a resumed run keeps its facts.
    """
    size = int(bundle.train.images.shape[-1])
    if cfg.data.image_size is not None and cfg.data.image_size != size:
        raise ConfigError(f"data.image_size is {cfg.data.image_size} but {bundle.name} images are {size} px"
                          + (" (set data.synthetic.image_size instead)" if bundle.name == "synthetic" else ""))
    if bundle.train.images.shape[-2] != size:
        raise DataError(f"{bundle.name}: training images are not square ({tuple(bundle.train.images.shape[-2:])})")
    mean, std = normalisation(cfg)
    params = resolve_method_params(cfg.method.name, cfg.data.dataset, cfg.method.params, bundle.train)
    return replace(cfg, data__image_size=size, data__mean=list(mean), data__std=list(std), method__params=params)
