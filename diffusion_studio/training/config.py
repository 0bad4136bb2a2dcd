"""TrainConfig: every knob of a training run, its presets, validation and JSON form."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from diffusion_studio.core.params import DEFAULT_GUIDANCE, DEFAULT_STEPS, GUIDANCE_MAX, SEED_MAX
from diffusion_studio.errors import UsageError
from diffusion_studio.training.unet import UNetConfig

DEFAULT_SAMPLE_PROMPTS: tuple[str, ...] = (
    "a large red circle in the top left on a black background",
    "a small blue square in the bottom right on a white background",
    "a green triangle in the center on a gray background",
    "a large yellow square in the top right on a gray background",
    "a small purple circle in the bottom left on a white background",
    "an orange triangle",
    "a large blue triangle in the bottom left on a black background",
    "a small green circle in the top right on a white background",
)
DEVICES = ("auto", "cpu", "cuda")
# Written beside the config in config.json / checkpoints; informational, ignored when loading.
METADATA_KEYS = {"text_encoder", "parameters", "flops_per_forward"}
# Fields that may change when a run is resumed; any other change is refused.
RESUMABLE_FIELDS = {"steps", "checkpoint_every", "keep_last", "sample_every", "sample_prompts",
                    "sample_steps", "sample_guidance", "device", "bf16", "num_threads", "log_every",
                    *("lr", "two_shape_share")}
# Of those, the ones that change what is trained (a curriculum: a new learning rate or data mix from
# the resumed step on); the change is named in the run's notes and its events.
CURRICULUM_FIELDS = ("lr", "two_shape_share")
LR_SCHEDULES = ("constant", "cosine")
MAX_SAMPLE_PROMPTS = 64


@dataclass
class TrainConfig:
    dataset: str = "shapes"  # "shapes" or "folder:PATH"
    hflip: bool = False  # random horizontal flips (folder datasets only)
    two_shape_share: float = 0.0  # Shapes: share of two-shape examples ("a red circle and a blue square")
    image_size: int = 32
    steps: int = 10000
    batch_size: int = 64
    lr: float = 5e-4  # AdamW
    weight_decay: float = 0.01
    warmup_steps: int = 500
    lr_schedule: str = "constant"  # after warm-up: "constant" or "cosine" (to 10% of lr)
    grad_clip: float = 1.0
    ema_decay: float = 0.999  # warmed up as min(decay, (1+n)/(10+n))
    p_uncond: float = 0.1  # share of captions replaced by "" (classifier-free guidance)
    schedule: str = "linear"  # noise schedule: "linear" (DDPM) or "cosine" (Improved DDPM eq. 17)
    T: int = 1000
    # λ of L_hybrid = L_simple + λ·L_vlb (Improved DDPM §3.1); used when unet.learn_sigma is on.
    vlb_weight: float = 0.001
    checkpoint_every: int = 1000
    keep_last: int = 3
    sample_every: int = 1000
    sample_prompts: tuple[str, ...] = DEFAULT_SAMPLE_PROMPTS
    sample_steps: int = DEFAULT_STEPS
    sample_guidance: float = DEFAULT_GUIDANCE
    seed: int = 0
    device: str = "auto"
    bf16: bool = True  # autocast where supported (CUDA with bf16); always off on CPU
    max_tokens: int = 32
    num_threads: int = 0  # 0: leave torch's default
    log_every: int = 10
    unet: UNetConfig = field(default_factory=UNetConfig)
    # A checkpoint (run folder or .safetensors) whose EMA weights start this run at step 0 with a
    # fresh optimizer (fine-tuning, e.g. on a new data mix); "" trains from a random init.
    init_from: str = ""

    def __post_init__(self) -> None:
        self.sample_prompts = tuple(self.sample_prompts)
        if isinstance(self.unet, dict):
            self.unet = UNetConfig.from_dict(self.unet)

    def validate(self) -> None:
        """Raise UsageError with one sentence for the first bad value (type, range or combination).

        Everything a run needs is checked here, so a run that starts never fails on its config
        after it has written to RUN_DIR.
        """
        for name in ("dataset", "schedule", "lr_schedule", "device", "init_from"):
            if not isinstance(getattr(self, name), str):
                raise UsageError(f"{name} must be a string, got {getattr(self, name)!r}.")
        for name in ("hflip", "bf16"):
            if not isinstance(getattr(self, name), bool):
                raise UsageError(f"{name} must be true or false, got {getattr(self, name)!r}.")
        if not isinstance(self.unet, UNetConfig):
            raise UsageError(f"unet must be a U-Net config, got {self.unet!r}.")
        if (not isinstance(self.sample_prompts, tuple) or not 1 <= len(self.sample_prompts) <= MAX_SAMPLE_PROMPTS
                or not all(isinstance(p, str) for p in self.sample_prompts)):
            raise UsageError(f"sample_prompts must be a list of 1 to {MAX_SAMPLE_PROMPTS} strings.")
        if not (self.dataset == "shapes" or self.dataset.startswith("folder:")):
            raise UsageError(f"Unknown dataset '{self.dataset}'; use 'shapes' or 'folder:PATH'.")
        if self.dataset.startswith("folder:") and not self.dataset[len("folder:"):]:
            raise UsageError("The folder dataset needs a path: 'folder:PATH'.")
        checks = [
            ("steps", self.steps, 1, 10**9), ("batch_size", self.batch_size, 1, 65536),
            ("image_size", self.image_size, 8, 1024), ("warmup_steps", self.warmup_steps, 0, 10**9),
            ("T", self.T, 2, 100000), ("checkpoint_every", self.checkpoint_every, 1, 10**9),
            ("keep_last", self.keep_last, 1, 10**6), ("sample_every", self.sample_every, 0, 10**9),
            ("sample_steps", self.sample_steps, 1, 10000), ("max_tokens", self.max_tokens, 2, 512),
            ("num_threads", self.num_threads, 0, 1024), ("log_every", self.log_every, 1, 10**9),
            ("seed", self.seed, 0, SEED_MAX),
        ]
        for name, value, lo, hi in checks:
            if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
                raise UsageError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}.")
        # (name, value, lo, hi, lo included, hi included); ema_decay 1 would freeze the EMA and
        # p_uncond 1 would never show the network a caption, so both stop short of 1.
        floats = [("lr", self.lr, 0.0, 1.0, False, True), ("weight_decay", self.weight_decay, 0.0, 1.0, True, True),
                  ("grad_clip", self.grad_clip, 0.0, 1e6, False, True),
                  ("ema_decay", self.ema_decay, 0.0, 1.0, True, False),
                  ("p_uncond", self.p_uncond, 0.0, 1.0, True, False),
                  ("two_shape_share", self.two_shape_share, 0.0, 1.0, True, True),
                  ("sample_guidance", self.sample_guidance, 0.0, GUIDANCE_MAX, True, True),
                  ("vlb_weight", self.vlb_weight, 0.0, 1.0, True, True)]
        for name, number, low, high, low_ok, high_ok in floats:
            ok = (isinstance(number, (int, float)) and not isinstance(number, bool)
                  and (low <= number if low_ok else low < number) and (number <= high if high_ok else number < high))
            if not ok:
                raise UsageError(f"{name} must be in {'[' if low_ok else '('}{low}, {high}{']' if high_ok else ')'}, "
                                 f"got {number!r}.")
        if self.hflip and self.dataset == "shapes":
            raise UsageError("Horizontal flips would swap left and right in the Shapes captions; "
                             "they are for folder datasets only.")
        if self.two_shape_share and self.dataset != "shapes":
            raise UsageError("Two-shape examples (two_shape_share) are part of the Shapes dataset only.")
        if self.schedule not in ("linear", "cosine"):
            raise UsageError(f"Unknown noise schedule '{self.schedule}'; use 'linear' or 'cosine'.")
        if self.lr_schedule not in LR_SCHEDULES:
            raise UsageError(f"Unknown lr_schedule '{self.lr_schedule}'; use 'constant' or 'cosine'.")
        if self.device not in DEVICES:
            raise UsageError(f"Unknown device '{self.device}'; use auto, cpu or cuda.")
        if 0 < self.unet.token_positions < self.max_tokens:
            raise UsageError(f"unet.token_positions ({self.unet.token_positions}) must cover the "
                             f"{self.max_tokens} prompt tokens (max_tokens).")
        if self.sample_steps > self.T:
            raise UsageError(f"sample_steps ({self.sample_steps}) must be at most T ({self.T}).")
        if self.unet.image_size != self.image_size:
            raise UsageError(f"The U-Net image size {self.unet.image_size} differs from the "
                             f"training image size {self.image_size}.")
        if self.image_size % self.unet.downsampling:
            raise UsageError(f"Image size {self.image_size} is not divisible by the U-Net's total "
                             f"downsampling factor {self.unet.downsampling}.")
        self.unet.validate()

    @property
    def learn_sigma(self) -> bool:
        """Whether the U-Net learns Σ_θ (trained with L_hybrid); lives in the U-Net config, as it sets the output."""
        return self.unet.learn_sigma

    def with_image_size(self, size: int) -> TrainConfig:
        """Same config at another image size; attention stays at the same depth levels."""
        old = self.unet.resolutions
        depth = {r: i for i, r in enumerate(old)}
        factor = 2 ** (len(self.unet.channel_mults) - 1)
        if size < 8 or size % factor:
            raise UsageError(f"Image size {size} is not divisible by the U-Net's total "
                             f"downsampling factor {factor} (or is below 8).")
        new = [size // 2**i for i in range(len(old))]
        unet = replace(self.unet, image_size=size,
                       attention_resolutions=tuple(new[depth[r]] for r in self.unet.attention_resolutions),
                       cross_attention_resolutions=tuple(new[depth[r]] for r in self.unet.cross_attention_resolutions))
        return replace(self, image_size=size, unet=unet)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["sample_prompts"] = list(self.sample_prompts)
        d["unet"] = self.unet.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """A config from its JSON form (not yet validated); UsageError for a malformed one."""
        if not isinstance(d, dict):
            raise UsageError(f"A training config must be a JSON object, got {type(d).__name__}.")
        known = {f.name for f in fields(cls)} | METADATA_KEYS
        unknown = set(d) - known
        if unknown:
            raise UsageError(f"Unknown training config field(s): {', '.join(sorted(map(str, unknown)))}.")
        d = {k: v for k, v in d.items() if k not in METADATA_KEYS}
        if "unet" in d:
            d["unet"] = UNetConfig.from_dict(d["unet"])
        if "sample_prompts" in d and not isinstance(d["sample_prompts"], (list, tuple)):
            raise UsageError(f"sample_prompts must be a list of strings, got {d['sample_prompts']!r}.")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def load(cls, path: Path) -> TrainConfig:
        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except OSError as exc:
            raise UsageError(f"Cannot read training config {path}: {exc.strerror or exc}.") from None
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            raise UsageError(f"The training config {path} is not valid JSON.") from None
        except UsageError as exc:
            raise UsageError(f"The training config {path} is invalid: {exc}") from None


def preset(name: str) -> TrainConfig:
    """Named presets: 'cpu-quick' (minutes), 'cpu' (the default Shapes model), 'gpu'."""
    if name == "cpu-quick":  # a tiny net whose loss visibly falls in 2-3 minutes on 2 cores
        return TrainConfig(steps=300, batch_size=32, lr=1e-3, warmup_steps=50, checkpoint_every=100,
                           sample_every=150, ema_decay=0.995, sample_prompts=DEFAULT_SAMPLE_PROMPTS[:4],
                           unet=UNetConfig(base_channels=16, channel_mults=(1, 2), num_res_blocks=1,
                                           attention_resolutions=(16,), cross_attention_resolutions=(16,),
                                           num_heads=2, groups=4))
    if name == "cpu":  # the shipped default model: ~1.7M params, ~0.55 GFLOP per forward;
        # it met issue 6's quality bar at step 5,680 (~105 min on 2 cores): 6,000 steps is the recipe.
        return TrainConfig(steps=6000, batch_size=64, lr=5e-4, warmup_steps=500, checkpoint_every=250,
                           sample_every=1000,
                           unet=UNetConfig(base_channels=32, channel_mults=(1, 2, 2), num_res_blocks=1,
                                           attention_resolutions=(8,), cross_attention_resolutions=(16, 8),
                                           num_heads=4, groups=8))
    if name == "gpu":
        return TrainConfig(steps=30000, batch_size=256, lr=5e-4, warmup_steps=1000, checkpoint_every=1000,
                           sample_every=2000, lr_schedule="cosine",
                           unet=UNetConfig(base_channels=64, channel_mults=(1, 2, 2, 2), num_res_blocks=2,
                                           attention_resolutions=(16, 8), cross_attention_resolutions=(16, 8),
                                           num_heads=4, groups=16))
    raise UsageError(f"Unknown preset '{name}'; use cpu-quick, cpu or gpu.")


PRESETS = ("cpu-quick", "cpu", "gpu")
