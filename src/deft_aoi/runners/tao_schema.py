"""Schema of the TAO Visual ChangeNet experiment spec, as far as the classify task uses it.

Keys, types and the few closed choices follow the public config dataclasses of TAO 6.26
(`nvidia_tao_core/config/visual_changenet/default_config.py` and `config/common/common_config.py`:
ExperimentConfig → model / dataset / train / evaluate / inference / export / gen_trt_engine / quantize).
Sections the loop never writes (segmentation, export, TensorRT, quantisation, MLOps loggers) are accepted
as opaque mappings so that a valid TAO spec is never refused for them.

The schema is data: `SCHEMA` maps a key to either a nested mapping or a `Leaf`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Union

from deft_aoi.dotted import get_dotted

Kind = Literal["str", "int", "float", "bool", "list", "dict", "mapping"]


@dataclass(frozen=True)
class Leaf:
    """One spec value. `mapping` = any nested mapping (an opaque section); `dict` = a flat key→item map."""

    kind: Kind
    item: Literal["str", "int", "float", "any"] = "any"  # element kind of list / dict values
    nullable: bool = False
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    path: bool = False  # a filesystem path: must be absolute and inside the workspace


Node = Union[Leaf, "dict[str, Node]"]

STR = Leaf("str")
OPT_STR = Leaf("str", nullable=True)
PATH = Leaf("str", nullable=True, path=True)
INT = Leaf("int")
POS_INT = Leaf("int", minimum=1)
FLOAT = Leaf("float")
PROB = Leaf("float", minimum=0.0)
BOOL = Leaf("bool")
INT_LIST = Leaf("list", item="int")
FLOAT_LIST = Leaf("list", item="float")
STR_LIST = Leaf("list", item="str")
OPAQUE = Leaf("mapping", nullable=True)

_DATA_PATHS: dict[str, Node] = {"csv_path": PATH, "images_dir": PATH}

_FLIP: dict[str, Node] = {"vflip_probability": PROB, "hflip_probability": PROB, "enable": BOOL}
_ROTATE: dict[str, Node] = {"rotate_probability": PROB, "angle_list": FLOAT_LIST, "enable": BOOL}
_COLOR: dict[str, Node] = {
    "brightness": FLOAT, "contrast": FLOAT, "saturation": FLOAT, "hue": FLOAT, "enable": BOOL,
    "color_probability": PROB,
}
_SCALE_CROP: dict[str, Node] = {"scale_range": FLOAT_LIST, "enable": BOOL}

_AUGMENT_CLASSIFY: dict[str, Node] = {
    "rgb_input_mean": FLOAT_LIST,
    "rgb_input_std": FLOAT_LIST,
    "random_flip": _FLIP,
    "random_rotate": _ROTATE,
    "random_color": _COLOR,
    "with_scale_random_crop": _SCALE_CROP,
    "with_random_blur": BOOL,
    "with_random_crop": BOOL,
    "augment": BOOL,
}

_DATASET_CLASSIFY: dict[str, Node] = {
    "train_dataset": _DATA_PATHS,
    "validation_dataset": _DATA_PATHS,
    "test_dataset": _DATA_PATHS,
    "infer_dataset": _DATA_PATHS,
    "image_ext": OPT_STR,
    "batch_size": POS_INT,
    "workers": Leaf("int", minimum=0),
    "fpratio_sampling": Leaf("float", minimum=0.0),
    "num_input": POS_INT,
    "input_map": Leaf("dict", item="int", nullable=True),
    "grid_map": Leaf("dict", item="int", nullable=True),
    "concat_type": Leaf("str", nullable=True, choices=("linear", "grid")),
    "image_width": POS_INT,
    "image_height": POS_INT,
    "augmentation_config": _AUGMENT_CLASSIFY,
    "num_classes": POS_INT,
    "num_golden": POS_INT,
    "quant_calibration_dataset": OPAQUE,
}

_MODEL: dict[str, Node] = {
    "backbone": {
        # TAO's own valid_options lag behind the backbones its containers ship (e.g. c_radio_*), so the
        # type is checked as a string only.
        "type": STR,
        "feat_downsample": BOOL,
        "pretrained_backbone_path": PATH,
        "freeze_backbone": BOOL,
    },
    "decode_head": {
        "in_channels": INT_LIST,
        "in_index": INT_LIST,
        "feature_strides": INT_LIST,
        "align_corners": BOOL,
        "decoder_params": Leaf("dict", item="int"),
        "use_summary_token": BOOL,
    },
    "classify": {
        "train_margin_euclid": FLOAT,
        "eval_margin": FLOAT,
        "embedding_vectors": POS_INT,
        "embed_dec": POS_INT,
        "learnable_difference_modules": Leaf("int", minimum=1),
        "difference_module": Leaf("str", nullable=True, choices=("learnable", "euclidean")),
    },
}

_TRAIN: dict[str, Node] = {
    # common TrainConfig
    "num_gpus": POS_INT,
    "gpu_ids": INT_LIST,
    "num_nodes": POS_INT,
    "seed": Leaf("int", minimum=-1),
    "cudnn": {"benchmark": BOOL, "deterministic": BOOL},
    "num_epochs": POS_INT,
    "checkpoint_interval": POS_INT,
    "checkpoint_interval_unit": Leaf("str", choices=("epoch", "step")),
    "validation_interval": POS_INT,
    "resume_training_checkpoint_path": PATH,
    "results_dir": PATH,
    # Visual ChangeNet train
    "optim": {
        "monitor_name": STR,
        "optim": Leaf("str", choices=("adamw", "adam", "sgd")),
        "lr": Leaf("float", minimum=0.0),
        "policy": Leaf("str", choices=("linear", "step")),
        "momentum": FLOAT,
        "weight_decay": FLOAT,
    },
    "pretrained_model_path": PATH,
    "classify": {"loss": Leaf("str", choices=("ce", "contrastive")), "cls_weight": FLOAT_LIST},
    "segment": OPAQUE,
    "tensorboard": {"enabled": BOOL, "infrequent_logging_frequency": Leaf("int", minimum=0)},
    "precision": STR,
    "sync_batchnorm": BOOL,
    "use_distributed_sampler": BOOL,
}

_EVAL_OR_INFER: dict[str, Node] = {
    "num_gpus": POS_INT,
    "gpu_ids": INT_LIST,
    "num_nodes": POS_INT,
    "checkpoint": PATH,
    "trt_engine": PATH,
    "results_dir": PATH,
    "batch_size": INT,  # TAO's default is -1 = "use dataset.classify.batch_size"
    "vis_after_n_batches": POS_INT,
}

SCHEMA: dict[str, Node] = {
    # CommonExperimentConfig
    "model_name": OPT_STR,
    "encryption_key": OPT_STR,
    "results_dir": PATH,
    "wandb": OPAQUE,
    "clearml": OPAQUE,
    # Visual ChangeNet ExperimentConfig
    "task": Leaf("str", nullable=True, choices=("classify",)),
    "model": _MODEL,
    "dataset": {"segment": OPAQUE, "classify": _DATASET_CLASSIFY},
    "train": _TRAIN,
    "evaluate": _EVAL_OR_INFER,
    "inference": _EVAL_OR_INFER,
    "export": OPAQUE,
    "gen_trt_engine": OPAQUE,
    "quantize": OPAQUE,
}


def all_keys(node: dict[str, Node] = SCHEMA, prefix: str = "") -> list[str]:
    """Every dotted key the schema knows (sections and leaves)."""
    out: list[str] = []
    for key, child in node.items():
        dotted = f"{prefix}{key}"
        out.append(dotted)
        if isinstance(child, dict):
            out.extend(all_keys(child, dotted + "."))
    return out


def lookup(dotted: str) -> Node | None:
    return get_dotted(SCHEMA, dotted)
