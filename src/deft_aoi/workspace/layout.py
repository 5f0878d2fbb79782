"""Where everything lives in a customer workspace (CONTRACTS §1) and in one run's results dir (§8)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from deft_aoi.errors import InputError
from deft_aoi.workspace.catalog import artefact

# One loop per workspace: this fcntl lock under results/ (its holder's JSON names the process).
WORKSPACE_LOCK_FILE = ".deft_workspace.lock"


@dataclass(frozen=True)
class WorkspaceLayout:
    root: Path

    @classmethod
    def at(cls, root: str | Path) -> WorkspaceLayout:
        return cls(Path(root).expanduser().resolve())

    @property
    def env_file(self) -> Path:
        return self.root / ".env"

    @property
    def versions_file(self) -> Path:
        return self.root / "versions.yaml"

    @property
    def spec_file(self) -> Path:
        return self.root / "specs" / "baseline_spec.yaml"

    @property
    def train_csv(self) -> Path:
        return self.root / "train" / "base" / "training_set.csv"

    @property
    def validation_csv(self) -> Path:
        return self.root / "train" / "base" / "validation_set.csv"

    @property
    def kpi_csv(self) -> Path:
        return self.root / "kpi" / "testing_set.csv"

    @property
    def kpi_images(self) -> Path:
        return self.root / "kpi" / "images"

    @property
    def mining_pool_dir(self) -> Path:
        return self.root / "augmentation" / "mining_pool"

    @property
    def mining_pool_csv(self) -> Path:
        return self.mining_pool_dir / "mining_pool.csv"

    @property
    def backbone_dir(self) -> Path:
        """Where the template spec expects the staged backbone weights (docker backend)."""
        return self.root / "augmentation" / "backbone"

    @property
    def anomalygen_dir(self) -> Path:
        return self.root / "augmentation" / "anomalygen"

    @property
    def synth_ng_dir(self) -> Path:
        return self.anomalygen_dir / "reconstructed_image"

    @property
    def synth_ok_dir(self) -> Path:
        return self.anomalygen_dir / "original_image"

    @property
    def defect_spec(self) -> Path:
        return self.anomalygen_dir / "defect_spec.jsonl"

    @property
    def results_root(self) -> Path:
        return self.root / "results"

    @property
    def workspace_lock(self) -> Path:
        return self.results_root / WORKSPACE_LOCK_FILE

    @property
    def tao_home(self) -> Path:
        """HOME of TAO jobs run as the host user (their uid has no home in the image)."""
        return self.root / ".deft_cache" / "tao_home"

    @property
    def hf_home(self) -> Path:
        """HF_HOME of Data Services jobs: the SigLIP/CLIP weights are downloaded once per workspace."""
        return self.root / ".deft_cache" / "huggingface"

    @property
    def embedding_cache(self) -> Path:
        """Source-pool embeddings shared by every run (keyed by content hash + encoder fingerprint)."""
        return self.root / ".deft_cache" / "embeddings"

    def images_root_for(self, csv: str | Path) -> Path | None:
        """The images root one of the workspace's own CSVs resolves against (CONTRACTS §1): kpi/images for
        the training, validation and KPI CSVs, the pool's own dir for the mining pool; None for any other."""
        path = Path(csv).expanduser().resolve()
        if path in (self.train_csv, self.validation_csv, self.kpi_csv):
            return self.kpi_images
        if path == self.mining_pool_csv:
            return self.mining_pool_dir
        return None

    @classmethod
    def holding(cls, csv: str | Path) -> WorkspaceLayout | None:
        """The workspace whose layout puts `csv` where it is (`<ws>/kpi/testing_set.csv`, …), if any."""
        path = Path(csv).expanduser().resolve()
        for root in path.parents[:3]:  # the workspace's CSVs sit one to three levels below its root
            ws = cls(root)
            if ws.images_root_for(path) is not None:
                return ws
        return None

    @property
    def image_manifest(self) -> Path:
        """Pre-flight's image manifest: sha256 per image with its size, mtime and inode (preflight/manifest.py)."""
        return self.root / ".deft_cache" / "image_manifest.npz"

    @property
    def preflight_cache(self) -> Path:
        """Pre-flight's per-chunk caches of the streamed mining pool: pixel-pair vectors and match results."""
        return self.root / ".deft_cache" / "preflight"

    @property
    def preflight_exclusions(self) -> Path:
        """The latest `deft preflight`'s list of leaking pool rows (a run keeps its own copy)."""
        return self.results_root / "preflight" / "pool_exclusions.csv"

    def rel(self, path: str | Path) -> str:
        """A path relative to the workspace root: the one coordinate space of assembled CSVs."""
        real = Path(path).resolve()
        try:
            return str(real.relative_to(self.root))
        except ValueError:  # a symlink leading out: the data's fault, said by name (never an internal error)
            raise InputError(f"resolves outside the workspace {self.root} ({real})", file=path,
                             hint="keep images inside the workspace; a symlink may not lead out of it") from None


@dataclass(frozen=True)
class RunLayout:
    """One run's results dir, `results/run_<YYYYMMDD_HHMMSS>/`; its file names come from the run catalog."""

    root: Path

    def path(self, key: str, **fields: object) -> Path:
        """A run-scope artefact of the catalog (workspace/catalog.py), e.g. path("handoff.best_model")."""
        art = artefact(key)
        if art.scope != "run":
            raise ValueError(f"{key} lives in a stage's dir: resolve it from the stage's recorded output_dir")
        return art.at(self.root, **fields)

    @property
    def run_id(self) -> str:
        return self.root.name

    @property
    def config_file(self) -> Path:
        return self.path("run.config")

    @property
    def state_file(self) -> Path:
        return self.path("run.state")

    @property
    def log_file(self) -> Path:
        return self.path("run.log")

    @property
    def lock_file(self) -> Path:
        return self.path("run.lock")

    @property
    def pool_exclusions(self) -> Path:
        """Pool rows that would leak validation/KPI data, found at pre-flight and kept out of mining."""
        return self.path("run.pool_exclusions")

    @property
    def synth_pool(self) -> Path:
        return self.root / "synth_pool"

    @property
    def report_html(self) -> Path:
        return self.path("run.report")

    @property
    def best_model_json(self) -> Path:
        return self.path("handoff.best_model")

    @property
    def best_model_spec(self) -> Path:
        return self.path("handoff.inference_spec")

    @property
    def best_model_onnx(self) -> Path:
        return self.path("handoff.onnx")

    @property
    def scratch(self) -> Path:
        return self.path("run.scratch")

    def traceback_file(self, iteration: str, stage: str) -> Path:
        """Where an internal error's traceback is kept (outside .scratch, which resume wipes)."""
        return self.path("run.traceback", iteration=iteration, stage=stage)

    def iteration_summary(self, iteration: str) -> Path:
        return self.path("gate.summary", iteration=iteration)

    def iteration_dir(self, iteration: str) -> Path:
        """`baseline` or `iterN`."""
        return self.root / iteration
