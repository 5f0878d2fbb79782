"""TAO's run-time rules: what NVIDIA's Visual ChangeNet and Data Services code accepts beyond the spec schema.

ONE module owns these facts. Every rule is a small pure function over plain values (the spec as a mapping,
CSV row counts and labels, paths, image tags) returning a `RuleResult` that names its source in NVIDIA's
public code (repository, path, release). `deft preflight --backend docker` prints every rule; the fake TAO
(`runners/fake/tao.py`) calls the very same functions, so the fake rejects what TAO rejects; the job
builders refuse a spec that breaks a spec rule before any container starts.

Importable with the standard library alone (no pandas, torch, pydantic): the fake TAO also runs inside slim
containers. The spec handed to the rules is the user's document merged over the schema defaults
(`tao/schema.with_defaults`), as TAO's hydra runner sees it.

Checked in (2026-12-01): NVIDIA-TAO/tao-pytorch 6.26.3 @bb8b234c and 7.0.1 @d99ff772; NVIDIA-TAO/tao-data-services
6.26.3 @d31f3ab2, 7.0.0 @b49ca0cb, 7.0.1 @7204967a, 7.1.0 @d825dfc1; NVIDIA-TAO/tao-skill-bank @49672c2c.
Re-read 2026-12-07 (issue 24) in tao-pytorch 7.0.1 @d99ff772 and the nvidia-tao-pytorch 7.3.0 wheel (PyPI):
C-RADIO's 224 px adapter, the batch check of every loader, linear concat along the height, the euclidean score,
pandas' type inference, Lightning's `_latest` link.

A rule's `severity` is "error" (TAO fails: preflight fails, the job builders and the fake refuse) or "warning"
(TAO runs but deft's loop would lose something: preflight warns, nothing is refused). `loop_rules` are deft's
own refusals of specs TAO accepts (a euclidean score is no probability): preflight only, never the fake.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from deft_aoi.dotted import get_dotted as _get  # standard library only

PASS_LABEL = "PASS"  # TAO: label = int(row['label'] != 'PASS'), exact case, on the CSV as written
VIT_STRIDES = [4, 8, 16, 32]
# Characters TAO's launcher survives in an override or config path: it joins the arguments into one string,
# `shlex.split`s it again and hands the words to Hydra, whose override grammar treats `,` `=` `(` `)` `[` `]`
# `{` `}` quotes and spaces as syntax.
# `~` is not among them: Hydra's override lexer takes it as the delete prefix of a key and has no value rule
# for it (UNQUOTED_CHAR is `/ - \\ + . $ % * @ ?`, hydra/grammar/OverrideLexer.g4).
SAFE_PATH = re.compile(r"^[A-Za-z0-9_./:+@%-]+$")
# C-RADIO's adapter reshapes its tokens to `patch_generator.input_dims` = RADIO's default resolution (224, 224) //
# patch 16: `img_size` from image_height lands in RADIO's **kwargs unused, so any other input size crashes.
CRADIO_ADAPTER_SIDE = 224
# What pandas' C parser reads as a number (int or float, incl. nan/inf spellings) when a whole column looks so.
_NUMERIC = re.compile(r"^\s*[+-]?((\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?|nan|NaN|NAN|inf|Inf|INF|infinity|Infinity)\s*$")
# The CSV columns TAO joins into an image path with os.path.join (object_name alone is read as str).
PATH_COLUMNS = ("input_path", "golden_path")
FIRST_DATA_SERVICES_MINING = (7, 0, 0)  # `embedding` / `tmm` entry points first ship in 7.0.0
EMBEDDING_MODELS = ("SigLIP", "CLIP")
# `model_path` with one of these suffixes is a TAO checkpoint: Data Services rebuilds the encoder from
# `model_config_path` (its train spec) instead of loading a Hugging Face model.
TAO_CHECKPOINT_SUFFIXES = (".pth", ".ckpt")
# The k-NN metrics NVIDIA's mining recipe offers per encoder: cosine for SigLIP (its embeddings are compared by
# angle); euclidean / manhattan too for the other encoders (CLIP, a TAO checkpoint).
KNN_METRICS = ("cosine", "euclidean", "manhattan")
SIGLIP_METRICS = ("cosine",)


@dataclass(frozen=True)
class Source:
    repo: str
    path: str
    release: str

    def __str__(self) -> str:
        return f"{self.repo}:{self.path} @ {self.release}"


_PYT = "NVIDIA-TAO/tao-pytorch"
_PYT_REL = "6.26.3 bb8b234c, 7.0.1 d99ff772"
_PYT_701 = "7.0.1 d99ff772, 7.3.0 (PyPI wheel)"
_DS = "NVIDIA-TAO/tao-data-services"
SOURCES: dict[str, Source] = {
    "cradio_224": Source(_PYT, "nvidia_tao_pytorch/cv/visual_changenet/backbone/vit_adapter.py (CRADIOAdapter."
                               "forward_feature_pyramid: H, W = patch_generator.input_dims; .view(bs, dim, H, W)) + "
                               "cv/backbone_v2/radio.py (RADIO resolution=(224, 224); img_size unused)",
                         _PYT_701 + "; 128 and 256 px crash running 7.3.0 on CPU"),
    "batch_check": Source(_PYT, "nvidia_tao_pytorch/core/lightning/tao_lightning_module.py (_dataloader_batch_check "
                                "from on_fit/validation/test/predict_start: len(dataset) < batch_size * num_devices "
                                "raises)", _PYT_701),
    "linear_concat": Source(_PYT, "nvidia_tao_pytorch/cv/optical_inspection/dataloader/oi_dataset.py (linear: "
                                  "torch.cat(img0T, 1), the height) + classification/models/changenet.py (build_model "
                                  "output_shape = [h, w * num_input]; ViT asserts it square)", _PYT_701),
    "euclidean_score": Source(_PYT, "nvidia_tao_pytorch/cv/visual_changenet/classification/models/cn_pl_model.py "
                                    "(_forward_pass: euclidean returns the model's distance, learnable a softmax)",
                              _PYT_701),
    "csv_types": Source(_PYT, "nvidia_tao_pytorch/cv/optical_inspection/dataloader/pl_oi_data_module.py "
                              "(pd.read_csv(..., dtype={'object_name': str})) + oi_dataset.py (os.path.join("
                              "root, input_path, object_name))", _PYT_701),
    "last_epochs": Source(_PYT, "nvidia_tao_pytorch/core/lightning/tao_lightning_module.py (ModelCheckpoint("
                                "every_n_epochs=checkpoint_interval, save_last='link'): `_latest` links the last "
                                "periodic checkpoint", _PYT_701),
    "image_ext": Source(_PYT, "nvidia_tao_pytorch/cv/optical_inspection/dataloader/oi_dataset.py "
                              "(get_absolute_image_path: path += ext)", _PYT_REL),
    "batch_size": Source(_PYT, "nvidia_tao_pytorch/cv/optical_inspection/dataloader/build_data_loader.py "
                               "(assert batch_size > 1; drop_last=True)", _PYT_REL),
    "sampler": Source(_PYT, "nvidia_tao_pytorch/cv/optical_inspection/dataloader/oi_dataset.py "
                            "(get_sampler: pf_ratio = num_pass / len(fail_indices))", _PYT_REL),
    "labels": Source(_PYT, "nvidia_tao_pytorch/cv/optical_inspection/dataloader/oi_dataset.py "
                           "(int(label != 'PASS'))", _PYT_REL),
    "vit_square": Source(_PYT, "nvidia_tao_pytorch/cv/visual_changenet/classification/models/changenet.py "
                               "(build_model output_shape; 'ViT Backbones only support square input')", _PYT_REL),
    "vit_adapter": Source(_PYT, "nvidia_tao_pytorch/cv/visual_changenet/backbone/vit_adapter.py (c4 = H // 2) + "
                                "classification/models/changenet.py (_c3 + _c4 when strides[-2] == strides[-1])",
                          _PYT_REL),
    "loss": Source(_PYT, "nvidia_tao_pytorch/cv/visual_changenet/classification/models/cn_pl_model.py "
                         "(_build_criterion asserts)", _PYT_REL),
    "intervals": Source(_PYT, "nvidia_tao_pytorch/core/initialize_experiments.py "
                              "(assert checkpoint/validation_interval <= num_epochs)", _PYT_REL),
    "num_input": Source(_PYT, "nvidia_tao_pytorch/cv/visual_changenet/classification/models/changenet.py "
                              "(output_shape = [h, w * num_input]) + oi_dataset.py (one image per input_map light)",
                        _PYT_REL),
    "task": Source(_PYT, "nvidia_tao_pytorch/cv/visual_changenet/scripts/train.py (task selects the model)",
                   _PYT_REL),
    "launcher": Source(_PYT, "nvidia_tao_pytorch/core/entrypoint.py (' '.join(unknown_args); shlex.split(call))",
                       _PYT_REL),
    "backbone": Source(_PYT, "nvidia_tao_pytorch/cv/visual_changenet/classification/models/changenet.py "
                             "(weights load only `if pretrained_backbone_path:`)", _PYT_REL),
    "ds_commands": Source(_DS, "setup.py console_scripts (embedding, tmm)",
                          "absent 6.26.3 d31f3ab2; present 7.0.0 b49ca0cb, 7.0.1 7204967a"),
    "ds_model": Source(_DS, "nvidia_tao_ds/mining/embedding/scripts/image_embeddings.py "
                            "(model == 'CLIP' / 'SigLIP', else NotImplementedError)", "7.0.1 7204967a"),
    "ds_checkpoint": Source(_DS, "nvidia_tao_ds/mining/embedding/scripts/image_embeddings.py "
                                 "(is_tao_checkpoint_path: .pth/.ckpt; 'model_config_path is required')",
                            "9f4cb14b"),
    "ds_metric": Source("NVIDIA-TAO/tao-skill-bank", "skills/data/tao-mine-aoi-images/references/setup.md "
                        "(knn_metric: cosine for SigLIP/CLIP; euclidean/manhattan otherwise) + tao-data-services "
                        "tmm/scripts/nearest_neighbors.py (cuml NearestNeighbors(metric=knn_metric))", "49672c2c"),
}


@dataclass(frozen=True)
class RuleResult:
    """One rule's verdict. `applies` is False when the rule does not concern this spec (e.g. a FAN backbone)."""

    rule: str
    ok: bool
    message: str
    source: Source
    applies: bool = True
    severity: str = "error"  # "error": TAO fails; "warning": TAO runs but loses something (see the module doc)

    @property
    def failed(self) -> bool:
        return self.applies and not self.ok and self.severity == "error"

    @property
    def warns(self) -> bool:
        return self.applies and not self.ok and self.severity == "warning"


@dataclass(frozen=True)
class DatasetFacts:
    """What the rules need of one CSV handed to TAO: its name in messages, row count and labels as written."""

    name: str
    path: str
    rows: int
    labels: tuple[str, ...]
    # Path columns pandas would read as numbers (every value numeric-looking or empty): column → (row, value) of
    # the first numeric one, row 1-based as a spreadsheet shows it (header = row 1).
    numeric_paths: tuple[tuple[str, int, str], ...] = ()


def _result(rule: str, source: str, problem: str | None, ok_text: str, *, applies: bool = True,
            severity: str = "error") -> RuleResult:
    return RuleResult(rule=rule, ok=problem is None, message=problem or ok_text, source=SOURCES[source],
                      applies=applies, severity=severity)


def release_of(image: str | None) -> tuple[int, int, int] | None:
    """(major, minor, patch) of a TAO image tag such as `nvcr.io/nvidia/tao/tao-toolkit:7.1.0-pyt`."""
    if not image:
        return None
    tag = image.rsplit("/", 1)[-1].partition("@")[0].partition(":")[2]
    match = re.match(r"^v?(\d+)\.(\d+)\.(\d+)", tag)
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


# ---------------------------------------------------------------- spec rules


def image_ext_rule(spec: Mapping[str, Any]) -> RuleResult:
    ext = _get(spec, "dataset.classify.image_ext")
    problem = None
    if not isinstance(ext, str) or not ext.startswith("."):
        problem = (f"dataset.classify.image_ext = {ext!r} has no leading dot: TAO appends it as is "
                   f"(<object>_<light>{ext if isinstance(ext, str) else ''}); write '.{ext}'")
    return _result("image_ext has a leading dot", "image_ext", problem, f"image_ext {ext!r}")


def batch_size_rule(spec: Mapping[str, Any], task: str = "train") -> RuleResult:
    """Only the training loader asserts batch_size > 1; inference and evaluate run a batch of 1 (NVIDIA's
    hand-off writes batch_size 1 so that a one-row CSV runs)."""
    batch = _get(spec, "dataset.classify.batch_size")
    problem = None
    least = 2 if task == "train" else 1
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < least:
        problem = (f"dataset.classify.batch_size = {batch!r}: TAO's training loader asserts batch_size > 1"
                   if task == "train" else f"dataset.classify.batch_size = {batch!r}: a loader needs ≥ 1")
    return _result("batch_size > 1", "batch_size", problem, f"batch_size {batch}")


def task_rule(spec: Mapping[str, Any]) -> RuleResult:
    task = _get(spec, "task")
    problem = None if task == "classify" else (f"task = {task!r}: the DEFT loop trains Visual ChangeNet "
                                               f"classify (task: classify); TAO's default task is segment")
    return _result("task is classify", "task", problem, "task classify")


def _backbone(spec: Mapping[str, Any]) -> str:
    return str(_get(spec, "model.backbone.type") or "")


def _is_vit(spec: Mapping[str, Any]) -> bool:
    name = _backbone(spec)
    return "radio" in name or "vit" in name


def _input_shape(spec: Mapping[str, Any]) -> tuple[int, int] | None:
    """(height, width) of the model input, as TAO's build_model computes it from the concatenated lights."""
    h, w = _get(spec, "dataset.classify.image_height"), _get(spec, "dataset.classify.image_width")
    if not isinstance(h, int) or not isinstance(w, int):
        return None
    concat = _get(spec, "dataset.classify.concat_type")
    if concat == "linear":
        n = _get(spec, "dataset.classify.num_input")
        return (h, w * n) if isinstance(n, int) else None
    if concat == "grid":
        grid = _get(spec, "dataset.classify.grid_map") or {}
        gx, gy = grid.get("x"), grid.get("y")
        return (h * gy, w * gx) if isinstance(gx, int) and isinstance(gy, int) else None
    return h, w


def _input_shape_rule(spec: Mapping[str, Any], rule: str, source: str, applies: bool,
                      bad: Callable[[tuple[int, int]], bool], need: str) -> RuleResult:
    shape = _input_shape(spec)
    problem = None
    if applies and shape is not None and bad(shape):
        problem = (f"backbone {_backbone(spec)} needs {need}; the input (image_height x image_width after "
                   f"concat_type {_get(spec, 'dataset.classify.concat_type')!r} of num_input "
                   f"{_get(spec, 'dataset.classify.num_input')}) is {shape[0]}x{shape[1]}")
    return _result(rule, source, problem, f"input {shape[0]}x{shape[1]}" if shape else "input size unknown",
                   applies=applies)


def vit_square_rule(spec: Mapping[str, Any]) -> RuleResult:
    return _input_shape_rule(spec, "ViT/RADIO input is square", "vit_square", _is_vit(spec),
                             lambda shape: shape[0] != shape[1], "a square input")


def _learnable_vit(spec: Mapping[str, Any]) -> bool:
    return _is_vit(spec) and _get(spec, "model.classify.difference_module") == "learnable"


def vit_multiple_of_32_rule(spec: Mapping[str, Any]) -> RuleResult:
    return _input_shape_rule(spec, "ViT adapter input is a multiple of 32", "vit_adapter", _learnable_vit(spec),
                             lambda shape: bool(shape[0] % 32 or shape[1] % 32),
                             "input sizes that are multiples of 32 with a learnable difference module (the "
                             "adapter's stride-32 map is half the stride-16 one)")


def cradio_224_rule(spec: Mapping[str, Any]) -> RuleResult:
    side = CRADIO_ADAPTER_SIDE
    return _input_shape_rule(spec, f"C-RADIO adapter input is {side}x{side}", "cradio_224",
                             _learnable_vit(spec) and "radio" in _backbone(spec),
                             lambda shape: shape != (side, side),
                             f"exactly {side}x{side} with a learnable difference module (its adapter reshapes "
                             f"to patch_generator.input_dims, {side // 16}x{side // 16} patches, whatever "
                             f"image_height says); set dataset.classify.image_width/image_height: {side}")


def vit_linear_lights_rule(spec: Mapping[str, Any]) -> RuleResult:
    """Linear concat stacks the lights along the HEIGHT in the dataloader while the model is built for
    [h, w * num_input] and a ViT asserts that square: with two or more lights the two never agree."""
    n = _get(spec, "dataset.classify.num_input")
    concat = _get(spec, "dataset.classify.concat_type")
    applies = _is_vit(spec) and concat == "linear"
    problem = None
    if applies and isinstance(n, int) and n >= 2:
        problem = (f"backbone {_backbone(spec)} with concat_type 'linear' and num_input {n}: TAO stacks the "
                   f"lights along the height ({n} x image_height) but builds the ViT for image_height x "
                   f"(image_width x {n}), which it asserts square: no image size runs; use one light or "
                   f"concat_type 'grid'")
    return _result("ViT with linear concat takes one light", "linear_concat", problem, f"num_input {n}",
                   applies=applies)


def vit_feature_strides_rule(spec: Mapping[str, Any]) -> RuleResult:
    strides = _get(spec, "model.decode_head.feature_strides")
    applies = _learnable_vit(spec)
    problem = None
    if applies and list(strides or []) != VIT_STRIDES:
        problem = (f"model.decode_head.feature_strides = {strides}: backbone {_backbone(spec)} with a learnable "
                   f"difference module needs {VIT_STRIDES} (its last feature map is half the third); set "
                   f"model.decode_head.feature_strides: {VIT_STRIDES} and use_summary_token: true")
    return _result("ViT decode_head.feature_strides", "vit_adapter", problem, f"feature_strides {strides}",
                   applies=applies)


def loss_rule(spec: Mapping[str, Any]) -> RuleResult:
    loss = _get(spec, "train.classify.loss")
    module = _get(spec, "model.classify.difference_module")
    weights = _get(spec, "train.classify.cls_weight")
    classes = _get(spec, "dataset.classify.num_classes")
    problem = None
    if loss == "ce" and module != "learnable":
        problem = f"train.classify.loss 'ce' needs model.classify.difference_module 'learnable', not {module!r}"
    elif loss == "contrastive" and module != "euclidean":
        problem = (f"train.classify.loss is {loss!r} (TAO's default when train.classify is absent) but "
                   f"model.classify.difference_module is {module!r}: contrastive loss needs 'euclidean'; "
                   f"a learnable module needs train.classify.loss: ce")
    elif loss == "ce" and isinstance(weights, list) and isinstance(classes, int) and len(weights) != classes:
        problem = f"train.classify.cls_weight has {len(weights)} weight(s) for num_classes {classes}"
    return _result("loss matches difference module", "loss", problem, f"loss {loss}, difference module {module}")


def intervals_rule(spec: Mapping[str, Any]) -> RuleResult:
    epochs = _get(spec, "train.num_epochs")
    problems = []
    if isinstance(epochs, int):
        keys = ["validation_interval"]
        if _get(spec, "train.checkpoint_interval_unit", "epoch") == "epoch":
            keys.insert(0, "checkpoint_interval")
        for key in keys:
            interval = _get(spec, f"train.{key}")
            if isinstance(interval, int) and interval > epochs:
                problems.append(f"train.{key} = {interval} is larger than train.num_epochs = {epochs} "
                                f"(TAO asserts before the first epoch; set train.{key} ≤ {epochs})")
    return _result("intervals ≤ num_epochs", "intervals", "; ".join(problems) or None,
                   f"num_epochs {epochs}, checkpoint_interval {_get(spec, 'train.checkpoint_interval')}")


def last_epochs_rule(spec: Mapping[str, Any]) -> RuleResult:
    """TAO saves every checkpoint_interval epochs and links `_latest` to the last one saved: the epochs after the
    last multiple are trained and thrown away (TAO does not fail, so this warns)."""
    epochs = _get(spec, "train.num_epochs")
    interval = _get(spec, "train.checkpoint_interval")
    applies = _get(spec, "train.checkpoint_interval_unit", "epoch") == "epoch"
    problem = None
    if (applies and isinstance(epochs, int) and isinstance(interval, int) and 0 < interval <= epochs
            and epochs % interval):
        kept = epochs - epochs % interval
        problem = (f"train.num_epochs = {epochs} is not a multiple of train.checkpoint_interval = {interval}: TAO "
                   f"saves its last checkpoint at epoch {kept} and links model_latest to it, so epochs "
                   f"{kept + 1}-{epochs} are trained and lost; make num_epochs a multiple of checkpoint_interval")
    return _result("num_epochs a multiple of checkpoint_interval", "last_epochs", problem,
                   f"num_epochs {epochs}, checkpoint_interval {interval}", applies=applies, severity="warning")


def num_input_rule(spec: Mapping[str, Any]) -> RuleResult:
    input_map = _get(spec, "dataset.classify.input_map")
    num_input = _get(spec, "dataset.classify.num_input")
    problem = None
    if isinstance(input_map, Mapping) and isinstance(num_input, int) and num_input != len(input_map):
        problem = f"dataset.classify.num_input = {num_input} but input_map lists {len(input_map)} light(s)"
    return _result("num_input = lights in input_map", "num_input", problem, f"num_input {num_input}")


SPEC_RULES: tuple[Callable[[Mapping[str, Any]], RuleResult], ...] = (
    task_rule, image_ext_rule, batch_size_rule, num_input_rule, intervals_rule, last_epochs_rule, loss_rule,
    vit_square_rule, vit_linear_lights_rule, vit_multiple_of_32_rule, cradio_224_rule, vit_feature_strides_rule,
)


def spec_rules(spec: Mapping[str, Any], task: str = "train") -> list[RuleResult]:
    """Every rule that needs the spec alone, for a `visual_changenet <task>` run (the spec of a loop is
    checked as a training spec: it trains before anything else runs)."""
    return [batch_size_rule(spec, task) if rule is batch_size_rule else rule(spec) for rule in SPEC_RULES]


def probability_score_rule(spec: Mapping[str, Any]) -> RuleResult:
    """deft's rule, not TAO's: the KPI, the RCA and the hand-off's eval_margin read siamese_score as the defect
    probability, which only the learnable difference module writes; euclidean writes a distance."""
    module = _get(spec, "model.classify.difference_module")
    problem = None
    if module != "learnable":
        problem = (f"model.classify.difference_module is {module!r}: TAO's siamese_score is then a feature "
                   f"distance, not the defect probability the loop's KPI threshold, RCA and hand-off read; use "
                   f"difference_module: learnable with train.classify.loss: ce")
    return _result("siamese_score is a probability", "euclidean_score", problem, f"difference module {module}")


def loop_rules(spec: Mapping[str, Any]) -> list[RuleResult]:
    """deft's own refusals of specs TAO runs (preflight only; the fake TAO does not apply them)."""
    return [probability_score_rule(spec)]


# ---------------------------------------------------------------- data rules


def _devices(spec: Mapping[str, Any]) -> int:
    gpus = _get(spec, "train.num_gpus")
    return gpus if isinstance(gpus, int) and not isinstance(gpus, bool) and gpus > 0 else 1


def rows_rule(spec: Mapping[str, Any], datasets: Sequence[DatasetFacts]) -> RuleResult:
    """TAO's lightning module checks EVERY loader it starts (train, validation, test, predict) for at least
    batch_size x devices rows before the first step: a KPI set of 10 rows fails a batch of 16."""
    batch = _get(spec, "dataset.classify.batch_size")
    devices = _devices(spec)
    need = batch * devices if isinstance(batch, int) and not isinstance(batch, bool) else 1
    problems = [f"{ds.name} CSV {ds.path} has {ds.rows} row(s); TAO needs ≥ batch_size "
                f"({batch}{f' x {devices} GPUs' if devices > 1 else ''}) = {need} in every set"
                for ds in datasets if ds.rows < need]
    counts = ", ".join(f"{ds.name} {ds.rows}" for ds in datasets)
    return _result("rows ≥ batch_size (every set)", "batch_check", "; ".join(problems) or None, f"rows: {counts}")


def path_types_rule(datasets: Sequence[DatasetFacts]) -> RuleResult:
    """TAO reads its CSVs with pandas' type inference (only object_name forced to str): a path column whose every
    value looks like a number (`0042`) becomes int/float, and os.path.join refuses it (or joins `42`)."""
    problems = [f"{ds.path} row {row}, field {column}: {value!r} and every other {column} look like numbers; "
                f"TAO's pandas reads the column as numbers (0042 → 42) and os.path.join fails; give the folders "
                f"a non-numeric name (e.g. a prefix)"
                for ds in datasets for column, row, value in ds.numeric_paths]
    return _result("path columns are text to pandas", "csv_types", "; ".join(problems) or None,
                   "input_path/golden_path read as text")


def training_classes_rule(datasets: Sequence[DatasetFacts]) -> RuleResult:
    train = next((ds for ds in datasets if ds.name == "training"), None)
    problem = None
    if train is not None:
        defects = sum(1 for label in train.labels if label != PASS_LABEL)
        passes = len(train.labels) - defects
        if defects == 0:
            problem = (f"training CSV {train.path} has no defect row: TAO's weighted sampler divides by the "
                       f"defect count")
        elif passes == 0:
            problem = (f"training CSV {train.path} has no 'PASS' row: TAO's weighted sampler gives every row "
                       f"weight 0 (invalid multinomial distribution)")
    return _result("training has PASS and defect rows", "sampler", problem, "both classes present",
                   applies=train is not None)


def labels_rule(datasets: Sequence[DatasetFacts]) -> RuleResult:
    """A label that means PASS but is not exactly `PASS` trains (and scores) as a defect in TAO."""
    problems = []
    for ds in datasets:
        for row, label in enumerate(ds.labels, start=2):
            if label != PASS_LABEL and label.strip().upper() == PASS_LABEL:
                problems.append(f"{ds.path} row {row}: label {label!r} is not exactly 'PASS' and TAO would read "
                                f"it as a defect; write 'PASS'")
                break
    return _result("labels: PASS exactly", "labels", "; ".join(problems) or None,
                   "every PASS label is exactly 'PASS'")


def data_rules(spec: Mapping[str, Any], datasets: Sequence[DatasetFacts]) -> list[RuleResult]:
    return [rows_rule(spec, datasets), training_classes_rule(datasets), labels_rule(datasets),
            path_types_rule(datasets)]


# ---------------------------------------------------------------- paths, backbone, images


def paths_rule(paths: Mapping[str, str]) -> RuleResult:
    """`paths`: what each path is (for the message) → the path that reaches TAO's command line."""
    problems = []
    for label, path in paths.items():
        bad = sorted({ch for ch in str(path) if not SAFE_PATH.match(ch)})
        if bad:
            shown = " ".join("space" if ch == " " else repr(ch) for ch in bad)
            problems.append(f"{label} {path!r} contains {shown}")
    problem = None
    if problems:
        problem = ("; ".join(problems) + ": TAO's launcher re-splits its command line and Hydra parses these "
                   "characters as syntax; move the workspace to a path of letters, digits and _ . / - only")
    return _result("paths survive TAO's command line", "launcher", problem, f"{len(paths)} path(s) plain")


def backbone_rule(spec: Mapping[str, Any], workspace: str, exists: Callable[[str], bool] = os.path.isfile,
                  ) -> RuleResult:
    """Docker preflight only: real TAO trains from random weights on a null path and reads nothing outside the
    workspace mount. The fake and local backends have no backbone file to load."""
    path = _get(spec, "model.backbone.pretrained_backbone_path")
    problem = None
    if not path:
        problem = ("model.backbone.pretrained_backbone_path is empty: TAO downloads nothing and would train the "
                   "backbone from random weights; stage the backbone file in the workspace (see docs/TAO.md) and "
                   "set the path")
    else:
        full = path if os.path.isabs(path) else os.path.join(workspace, path)
        root = os.path.normpath(workspace)
        if os.path.commonpath([root, os.path.normpath(full)]) != root:
            problem = (f"backbone file {path} is outside the workspace {workspace} (the container sees only the "
                       f"workspace)" + ("" if exists(full) else " and absent on this machine"))
        elif not exists(full):
            problem = f"backbone file {full} not found (model.backbone.pretrained_backbone_path)"
    return _result("backbone weights staged", "backbone", problem, f"backbone weights {path}")


def mining_engine_rule(engine: str | None, data_services_image: str | None) -> RuleResult:
    applies = engine == "data_services"
    release = release_of(data_services_image)
    problem = None
    first = ".".join(map(str, FIRST_DATA_SERVICES_MINING))
    if applies and release is not None and release < FIRST_DATA_SERVICES_MINING:
        problem = (f"--mining-engine data_services needs a Data Services image ≥ {first} (first with the "
                   f"`embedding` / `tmm` commands); {data_services_image} is older")
    ok_text = (f"{data_services_image}" + ("" if release else f" (no release tag: assumed ≥ {first})")
               if applies else "builtin mining engine")
    return _result("Data Services has embedding/tmm", "ds_commands", problem, ok_text, applies=applies)


def embedding_model_rule(model: Any) -> RuleResult:
    problem = None if model in EMBEDDING_MODELS else (
        f"embedding model {model!r}: Data Services accepts exactly {' or '.join(EMBEDDING_MODELS)}")
    return _result("embedding model name", "ds_model", problem, f"model {model}")


def is_tao_checkpoint(model_path: str | None) -> bool:
    return bool(model_path) and str(model_path).lower().endswith(TAO_CHECKPOINT_SUFFIXES)


def embedding_checkpoint_rule(model_path: str | None, model_config_path: str | None) -> RuleResult:
    """A TAO checkpoint as the encoder needs its train spec (`model_config_path`), else Data Services refuses."""
    applies = is_tao_checkpoint(model_path)
    problem = None
    if applies and not model_config_path:
        problem = (f"embedding model_path {model_path} is a TAO checkpoint: Data Services needs its train spec as "
                   "model_config_path")
    return _result("embedding checkpoint has its spec", "ds_checkpoint", problem,
                   f"TAO checkpoint {model_path} with {model_config_path}" if applies else "Hugging Face model",
                   applies=applies)


def knn_metric_rule(model: str, model_path: str | None, metric: str) -> RuleResult:
    """The metrics the mining recipe allows per encoder: SigLIP embeddings by cosine only."""
    siglip = model == "SigLIP" and not is_tao_checkpoint(model_path)
    allowed = SIGLIP_METRICS if siglip else KNN_METRICS
    problem = None if metric in allowed else (
        f"knn_metric {metric!r} with {'SigLIP' if siglip else model}: the mining recipe allows "
        f"{' / '.join(allowed)} for this encoder")
    return _result("k-NN metric fits the encoder", "ds_metric", problem, f"knn_metric {metric}")


def failures(results: Iterable[RuleResult]) -> list[RuleResult]:
    """The rules TAO fails on (warnings are not failures: TAO runs)."""
    return [r for r in results if r.failed]


# ---------------------------------------------------------------- one Visual ChangeNet run


# The CSVs each task reads (names as messages show them) → the spec key of their dataset.
TASK_DATASETS: dict[str, tuple[tuple[str, str], ...]] = {
    "train": (("training", "train_dataset"), ("validation", "validation_dataset")),
    "inference": (("KPI", "infer_dataset"),),
    "evaluate": (("test", "test_dataset"),),
}


def numeric_columns(rows: Sequence[Mapping[str, str | None]],
                    columns: Sequence[str]) -> tuple[tuple[str, int, str], ...]:
    """Of `columns`, those pandas would infer as numbers (every value numeric-looking or empty, one numeric at
    least), each with the 1-based spreadsheet row (header = 1) and value of its first numeric cell."""
    found = []
    for column in columns:
        first: tuple[int, str] | None = None
        for row_no, row in enumerate(rows, start=2):
            value = row.get(column) or ""
            if not value.strip():
                continue
            if not _NUMERIC.match(value):
                first = None
                break
            if first is None:
                first = (row_no, value)
        if first is not None:
            found.append((column, *first))
    return tuple(found)


def dataset_facts(name: str, path: str) -> DatasetFacts:
    """Row count and labels of a CSV exactly as TAO's pandas reads them (no stripping, no case folding), and
    the path columns its type inference would turn into numbers."""
    import csv

    from deft_aoi.bounded import MAX_BYTES, csv_fields_up_to_max_bytes
    from deft_aoi.errors import InputError
    from deft_aoi.io_utils import refuse_special_file

    refuse_special_file(path)
    csv_fields_up_to_max_bytes()
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        try:
            rows = list(reader)
        except csv.Error as exc:
            raise InputError(f"cannot read CSV ({exc}); a cell is at most {MAX_BYTES // 2**20} MB", file=path,
                             row=reader.line_num + 1) from exc  # line_num: the lines before the bad record
    labels = tuple((row.get("label") or "") for row in rows)
    return DatasetFacts(name=name, path=path, rows=len(labels), labels=labels,
                        numeric_paths=numeric_columns(rows, PATH_COLUMNS))


def changenet_run_rules(spec: Mapping[str, Any], task: str, paths: Mapping[str, str],
                        read: Callable[[str, str], DatasetFacts] = dataset_facts) -> list[RuleResult]:
    """Every rule one `visual_changenet <task>` run meets in TAO, over its effective spec (defaults merged)."""
    results = [*spec_rules(spec, task), paths_rule(paths)]
    datasets = []
    for name, key in TASK_DATASETS.get(task, ()):
        csv_path = _get(spec, f"dataset.classify.{key}.csv_path")
        if csv_path and os.path.isfile(csv_path):
            datasets.append(read(name, str(csv_path)))
    if datasets:
        results.extend(data_rules(spec, datasets))
    return results
