"""Training recipes: frozen, typed dataclasses loaded from TOML plus ``--set key=value`` overrides.

Every recipe has ``name``, ``task``, ``[data]``, ``[model]``, ``[train]``, ``[loss]`` and ``[output]``. Names that pick
an implementation (``data.kind``, ``model.name``, ``train.loss``) are checked against the registries, so an error
lists the valid names.
"""

from __future__ import annotations

import os
import shlex

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from specgan.audio.params import AudioParams
from specgan.data.loaders import DATA_KINDS
from specgan.losses import LOSSES
from specgan.models import MODELS, models_for
from specgan.recipe import MAX_SEED, dump_toml, from_mapping, merge, param, parse_overrides, read_toml, \
    to_mapping, toml_value
from specgan.train.added_keys import complete_saved_recipe
from specgan.train.checkpoint import STEP_DIGITS  # checkpoint names bound train.steps

#: The largest weight of a loss term: the usual ones are 10 or less, and 3e38 had made the loss infinite at step 1,
#: which the divergence message put down to the learning rates.
MAX_LOSS_WEIGHT = 1000.0
#: The recipe's ``task``: ``generate`` (a GAN that draws images from noise) or ``translate`` (a CycleGAN-style
#: mapping between two domains, trained from unpaired examples).
TASKS = ("generate", "translate")


#: The largest side ``data.image_size`` takes: a folder is held whole in memory, 12 MB per 1024×1024 RGB picture.
MAX_IMAGE_SIDE = 1024


def _refuse_nul(key: str, path: str) -> None:
    """A ValueError for a path key whose value holds a NUL character (TOML's "\\u0000"), which no file name holds:
    the file system calls refuse it, which had ended the command as an internal error."""
    if "\0" in path:
        written = toml_value(path).replace("\0", "\\u0000")  # as the recipe writes it
        raise ValueError(f"{key} = {written}: a path cannot hold a NUL character")


@dataclass(frozen=True)
class DataConfig:
    kind: str = param("mnist", "Dataset kind.", choices=tuple(DATA_KINDS))
    path: str = param("data/mnist", "Folder of the dataset: the IDX files, the image folder, or a prepped dataset "
                                    "(relative paths are relative to the current directory).")
    split: str = param("train", "Which split of an IDX dataset to train on.", choices=("train", "test"))
    domains: tuple[str, ...] = param((), "Spectrogram datasets: domains to keep, in label order (empty: all).")
    image_size: tuple[int, ...] = param((), "Image folders: resize every image to [height, width] (empty: keep); "
                                            "each side even, from 6 to 1024 (the DCGAN halves it to at least 3), "
                                            "e.g. 28x28, 32x32, 64x64, 80x128.")
    channels: int = param(1, "Image folders: 1 (grayscale; colour images are converted) or 3 (RGB colour).",
                          choices=(1, 3))

    def __post_init__(self) -> None:
        _refuse_nul("path", self.path)
        object.__setattr__(self, "path", os.path.expanduser(self.path))  # "~/data/mnist", as a shell would read it
        if self.image_size and (len(self.image_size) != 2 or min(self.image_size) < 6
                                or max(self.image_size) > MAX_IMAGE_SIDE or any(side % 2 for side in self.image_size)):
            raise ValueError(f"image_size = {list(self.image_size)}: expected [height, width], each even and from 6 "
                             f"to {MAX_IMAGE_SIDE} (the DCGAN halves both sides at least once, to at least 3; the "
                             f"whole folder is held in memory at that size)")


@dataclass(frozen=True)
class ModelConfig:
    name: str = param("dcgan", "Model family: dcgan (task generate); cyclegan (ResNet generator) or cyclegan-vc2 "
                               "(2-1-2D gated generator), each with a PatchGAN discriminator (task translate).",
                      choices=tuple(MODELS))
    conditional: bool = param(False, "Condition G and D on the class label (\"give me a 7\").")
    z_dim: int = param(100, "Latent size.", min=1, max=4096)
    channels: int = param(64, "Base channel count of G and D (the widest layer has 8x this).", min=1, max=1024)
    spectral_norm: bool = param(False, "Spectral normalisation on every layer of D.")
    embed_dim: int = param(0, "Conditional dcgan: size of G's learned label embedding, concatenated to z (0: one "
                              "per class, as a one-hot label has; as many as z had made each class collapse to "
                              "one image at CPU budgets).", min=0, max=4096)
    n_blocks: int = param(6, "translate: residual blocks in each generator.", min=1, max=64)


@dataclass(frozen=True)
class TrainConfig:
    steps: int = param(5000, "Generator updates in the whole run.", min=1, max=10**STEP_DIGITS - 1)
    batch_size: int = param(128, "Real images per step.", min=1)
    seed: int = param(0, "Seed for weights, batches and latents.", min=0, max=MAX_SEED)
    loss: str = param("", "Adversarial loss (empty: the task's default, bce for generate and lsgan for translate).",
                      choices=("",) + tuple(LOSSES))
    gp_weight: float = param(0.0, "Weight of the WGAN-GP gradient penalty (0: none; 10 with the wgan loss).",
                             min=0.0, max=MAX_LOSS_WEIGHT)
    n_critic: int = param(1, "Discriminator updates per generator update.", min=1, max=100)
    lr_g: float = param(2e-4, "Adam learning rate of G.", above=0.0, max=1.0)
    lr_d: float = param(2e-4, "Adam learning rate of D.", above=0.0, max=1.0)
    betas: tuple[float, ...] = param((0.5, 0.999), "Adam betas.")
    lr_decay_start: float = param(1.0, "Fraction of train.steps after which both learning rates fall linearly "
                                        "towards 0, CycleGAN's schedule: the last of n decaying steps has 1/(n + 1) "
                                        "of the rate (1: constant).", min=0.0, max=1.0)
    ema_decay: float = param(0.999, "Decay of the moving average of G's weights used for samples (0: off).",
                             min=0.0, max=1.0)
    sample_every: int = param(500, "Steps between sample grids.", min=1)
    checkpoint_every: int = param(1000, "Steps between checkpoints (one is always written at the end).", min=1)
    keep_checkpoints: int = param(3, "How many recent checkpoints to keep.", min=1)
    crop_frames: int = param(0, "translate: width in frames of the random time crop taken from each chunk (0: the "
                                "whole chunk); the only augmentation, so pitch and timbre stay as recorded.", min=0)
    pool_size: int = param(50, "translate: generated images kept in the history pool that D also sees (0: none).",
                           min=0)
    precision: str = param("auto", "Arithmetic of the forward passes: bf16 autocast or plain fp32 (auto: bf16 where "
                                   "it was measured faster, on CUDA for the translators and on AMD CPUs with "
                                   "AVX512-BF16; fp32 elsewhere, and for dcgan on CUDA). Weights, optimiser state and "
                                   "losses stay fp32.",
                           choices=("auto", "bf16", "fp32"))
    channels_last: bool | str = param("auto", "Keep images and weights in channels-last memory order (NHWC), which "
                                              "the convolution kernels of some devices run faster (auto: on a CPU for "
                                              "dcgan, and for cyclegan in bf16, where it was faster; off for "
                                              "cyclegan in fp32 on a CPU, for cyclegan-vc2 and on CUDA, where it was "
                                              "slower, except inside compiled cyclegan networks on CUDA, which "
                                              "compute their convolutions channels-last; false: nowhere).",
                                      choices=("auto", True, False))
    compile: bool | str = param("auto", "torch.compile the generators and discriminators: a one-off compile of a "
                                        "minute or so, then faster steps (auto: on CUDA in one process for cyclegan, "
                                        "where it was faster, when Triton can build kernels: Triton, a C compiler "
                                        "and Python's headers are installed, the card is Volta or newer, and a "
                                        "test kernel compiles; train says why when it does not).",
                                choices=("auto", True, False))
    cudnn_benchmark: bool = param(True, "CUDA: let cuDNN time its convolution algorithms on the first steps and keep "
                                        "the fastest (torch.backends.cudnn.benchmark).")
    cuda_graphs: bool = param(True, "CUDA, one process: after 3 eager steps (translate: once the history pools are "
                                    "full), record the training step as a CUDA graph and replay it (one launch per "
                                    "step instead of thousands; the same kernels), compiled or not. Not under "
                                    "torchrun.")

    def __post_init__(self) -> None:
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas = {list(self.betas)}: expected two numbers in [0, 1)")


@dataclass(frozen=True)
class LossConfig:
    """Weights of the translate task's loss terms (the adversarial loss is ``train.loss``)."""

    cycle_weight: float = param(10.0, "translate: weight of the cycle-consistency L1 loss, A→B→A and B→A→B.",
                                min=0.0, max=MAX_LOSS_WEIGHT)
    identity_weight: float = param(5.0, "translate: weight of the identity-mapping L1 loss, G_AB(B) ≈ B and "
                                        "G_BA(A) ≈ A (0: off).", min=0.0, max=MAX_LOSS_WEIGHT)
    identity_until: int = param(10000, "translate: the identity loss is used up to this step, then switched off.",
                                min=0)


@dataclass(frozen=True)
class OutputConfig:
    dir: str = param("", "Run folder (empty: runs/<name>).")

    def __post_init__(self) -> None:
        _refuse_nul("dir", self.dir)
        object.__setattr__(self, "dir", os.path.expanduser(self.dir))  # "~/runs/x", as a shell would read it


@dataclass(frozen=True)
class Recipe:
    name: str = field(metadata={"help": "Run name; also the default run folder runs/<name>."})
    task: str = param("generate", "What to train: generate (a GAN from noise) or translate (a CycleGAN between two "
                                  "domains).", choices=TASKS)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    #: For ``specgan prep --recipe``: how to make the spectrogram dataset. Training takes the audio parameters
    #: stored in the dataset itself, so they cannot disagree.
    audio: AudioParams = field(default_factory=AudioParams)

    def __post_init__(self) -> None:
        if not self.name or not all(c.isalnum() or c in "-_." for c in self.name) or self.name.startswith("."):
            raise ValueError(f"name = {self.name!r}: give the run a plain name (letters, digits, - and _)")
        family = MODELS[self.model.name].task
        if family != self.task:
            raise ValueError(f"model.name = {self.model.name!r} is a {family} model; task = {self.task!r} needs one "
                             f"of {', '.join(models_for(self.task))}")
        if self.model.embed_dim and not self.model.conditional:  # it would change nothing, yet bind the run
            raise ValueError(f"model.embed_dim = {self.model.embed_dim}: the width of a conditional dcgan's label "
                             f"embedding; this model is not conditional (model.conditional = false), so remove it")
        if self.task == "translate":
            if len(self.data.domains) != 2:
                raise ValueError(f"data.domains = {list(self.data.domains)}: task = 'translate' needs the two "
                                 f"domains to map between, e.g. data.domains = [\"SF1\", \"TM3\"]")
            if self.model.conditional:
                raise ValueError("model.conditional = true: a translate model is not class-conditional")
            if self.train.n_critic != 1 or self.train.gp_weight:
                raise ValueError("train.n_critic and train.gp_weight are generate-only; translate trains D once per "
                                 "step")
            # Keys a translate run has no use for: a value other than the default would be silently ignored.
            for key, value, default in (("model.z_dim", self.model.z_dim, ModelConfig.z_dim),
                                        ("model.spectral_norm", self.model.spectral_norm, ModelConfig.spectral_norm),
                                        ("train.ema_decay", self.train.ema_decay, TrainConfig.ema_decay)):
                if value != default:
                    raise ValueError(f"{key} = {toml_value(value)}: generate-only (a translate model draws no latents, "
                                     f"its PatchGAN D has no spectral norm, and it keeps no moving average of G); "
                                     f"remove it")

    @property
    def adversarial_loss(self) -> str:
        """``train.loss``, or the task's default when it is empty."""
        return self.train.loss or {"generate": "bce", "translate": "lsgan"}[self.task]
    @property
    def run_dir(self) -> Path:
        return Path(self.output.dir or Path("runs") / self.name)


#: The file a run keeps its resolved recipe in, and the line that starts it.
RUN_RECIPE = "recipe.toml"
RUN_RECIPE_HEADER = "# resolved recipe of this run"


def saved_recipe_mapping(recipe: Recipe) -> dict[str, Any]:
    """:func:`recipe_mapping` as a run keeps it (its ``recipe.toml`` and every checkpoint): with ``data.path`` made
    absolute, so that the run continues, and ``sample``/``eval`` find its data, from any current directory."""
    table = recipe_mapping(recipe)
    table["data"]["path"] = str(Path(recipe.data.path).absolute())
    return table


def continue_command(run_dir: str | os.PathLike) -> str:
    """The command that continues the run in ``run_dir`` (its ``recipe.toml``), shell-quoted to be copied."""
    return f"specgan train {shlex.quote(str(Path(run_dir) / RUN_RECIPE))}"


def run_recipe_text(recipe: Recipe) -> str:
    """The run folder's ``recipe.toml``: :func:`saved_recipe_mapping`, under a header naming the command that
    continues it."""
    table = saved_recipe_mapping(recipe)
    # abspath, not Path.absolute: "runs/../x" is named as the folder it is (symbolic links kept as given)
    return (f"{RUN_RECIPE_HEADER}; continue it with: {continue_command(os.path.abspath(recipe.run_dir))}\n"
            + dump_toml(table))


def is_run_recipe(path: Path) -> bool:
    """Whether ``path`` is a run folder's own ``recipe.toml`` (written by :func:`run_recipe_text`)."""
    if path.name != RUN_RECIPE:
        return False
    try:
        with open(path, "rb") as f:
            return f.readline().startswith(RUN_RECIPE_HEADER.encode())
    except OSError:
        return False


def restore_run_recipe(run: Path) -> tuple[Path, Path] | None:
    """For a run folder whose ``recipe.toml`` is gone but whose checkpoints are there: the recipe rebuilt from the
    newest intact checkpoint, which holds the resolved recipe the run trained with (its ``output.dir`` made this
    folder, which may have moved), written back as the run's own. Returns ``(recipe file, checkpoint)``, or None
    without an intact checkpoint."""
    from specgan.atomic import atomic_path
    from specgan.train.checkpoint import list_checkpoints, load_latest_checkpoint

    if not list_checkpoints(run):
        return None
    # Quietly: training loads the same checkpoints next, and says which are damaged as it sets them aside.
    found = load_latest_checkpoint(run, tidy=False, on_warning=lambda line: None)
    if found is None:
        return None
    checkpoint, state = found
    table = {**state["recipe"], "output": {**state["recipe"].get("output", {}), "dir": str(run)}}
    with atomic_path(run / RUN_RECIPE) as tmp:
        tmp.write_text(run_recipe_text(load_recipe(None, base=table)))
    return run / RUN_RECIPE, checkpoint


def load_recipe(path: str | Path | None, *, overrides: list[str] | tuple[str, ...] = (),
                base: Mapping[str, Any] | None = None) -> Recipe:
    """Read a recipe file (or start from ``base``, e.g. the recipe stored in a checkpoint) and apply ``--set``
    overrides. Any problem is a one-line ConfigError naming the file (or ``--set``) and the dotted key.

    A run folder's own ``recipe.toml`` names that folder as ``output.dir``, wherever it is now and whatever the
    current directory (``--set output.dir=...`` still wins): continuing a run never starts a new one elsewhere."""
    table = dict(base or {})
    source = "recipe"
    if path is not None:
        path = Path(path)
        table = read_toml(path)
        source = str(path)
        from_mapping(Recipe, table, source=source)  # report errors in the file against the file
        if is_run_recipe(path):  # saved by an older specgan, perhaps: keys added since take the run's values
            table = merge(complete_saved_recipe(table), {"output": {"dir": str(path.parent)}})
    if overrides:
        table = merge(table, parse_overrides(overrides))
        source = "--set" if path is None else f"{path} with --set"
    return from_mapping(Recipe, table, source=source)


def recipe_mapping(recipe: Recipe) -> dict[str, Any]:
    """The resolved recipe as plain nested dicts (saved in the run folder and in every checkpoint)."""
    out = to_mapping(recipe)
    return {k: (to_mapping(getattr(recipe, k)) if isinstance(v, dict) else v) for k, v in out.items()}
