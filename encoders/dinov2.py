"""Frozen DINOv2 encoder (through timm): images -> patch tokens, CLS token or pooled patches.

DINOv2 (Oquab et al., 2023, https://arxiv.org/abs/2304.07193) and DINOv2 with registers
(Darcet et al., 2023, https://arxiv.org/abs/2309.16588) ViTs with 14-pixel patches, built with
timm (``vit_small_patch14_dinov2.lvd142m``, ``vit_small_patch14_reg4_dinov2.lvd142m``, ...).

Registered names: ``dinov2-vit{s,b,l,g}14`` and ``dinov2-vit{s,b,l,g}14-reg``; ``dinov2`` is
``dinov2-vits14``. Token modes (S = ``image_size``, a multiple of 14):

  * ``patch``: patch tokens after the final norm, CLS and register tokens removed (the tokens
    DINO-WM plans with): ``(B, (S/14)**2, D)``; ViT-S/14 at 224 gives ``(B, 256, 384)``;
  * ``cls``: the CLS token after the final norm, ``(B, 1, D)``;
  * ``pooled``: the mean of the patch tokens, ``(B, 1, D)``.

Weights are looked up in this order (never over the network unless asked):
  1. ``weights=PATH``: a ``.safetensors`` or ``.pth`` file holding a timm state dict or an
     official torch-hub checkpoint (``dinov2_vits14_pretrain.pth``; converted on load);
  2. a copy already in the Hugging Face cache (timm's weights) or torch-hub's checkpoint folder;
  3. a download through timm, only with ``download=True`` or ``WMPC_ALLOW_DOWNLOAD=1``.
Otherwise :class:`WeightsNotFoundError` says how to provide them. ``weights="random"`` gives an
untrained encoder (``pretrained=False``, and the fingerprint says so). Position embeddings are
resampled from the checkpoint's grid (37x37 at 518 pixels) to ``image_size``. Files are read with
``safetensors`` or ``torch.load(weights_only=True)``, so no pickled code ever runs.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import numbers
import os
import re
from pathlib import Path

import torch
import torch.nn as nn

from . import register_encoder
from .base import Encoder

__all__ = ["DINOv2Encoder", "WeightsNotFoundError", "WeightsFileError", "VARIANTS", "TOKEN_MODES",
           "weights_status", "load_state_dict_file", "hub_to_timm"]

log = logging.getLogger(__name__)

PATCH_SIZE = 14
TOKEN_MODES = ("patch", "cls", "pooled")
VARIANTS = ("vits14", "vitb14", "vitl14", "vitg14")  # ViT-S/B/L/g with 14-pixel patches
_TIMM_ARCH = {"vits14": "small", "vitb14": "base", "vitl14": "large", "vitg14": "giant"}
_VARIANT_OF_DIM = {384: "vits14", 768: "vitb14", 1024: "vitl14", 1536: "vitg14"}
_HF_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm publishes on the HF hub
_PATCH_KEY = "patch_embed.proj.weight"
_NESTING_KEYS = ("teacher", "model", "state_dict", "module")  # checkpoint wrappers, unwrapped in order
ALLOW_DOWNLOAD_ENV = "WMPC_ALLOW_DOWNLOAD"


def timm_name(variant: str, registers: bool = False) -> str:
    """timm model name with weight tag, e.g. ``vit_small_patch14_reg4_dinov2.lvd142m``."""
    reg = "_reg4" if registers else ""
    return f"vit_{_TIMM_ARCH[variant]}_patch14{reg}_dinov2.lvd142m"


def encoder_name(variant: str, registers: bool = False) -> str:
    """Registered name, e.g. ``dinov2-vitb14-reg``."""
    return f"dinov2-{variant}" + ("-reg" if registers else "")


# --- errors ----------------------------------------------------------------------------------
class WeightsNotFoundError(FileNotFoundError):
    """No DINOv2 weights were found; the message lists the three ways to provide them."""


class WeightsFileError(ValueError):
    """A weights file exists but cannot be read or does not fit the requested variant."""


def _hf_cache_dir() -> Path:
    from huggingface_hub import constants
    return Path(constants.HF_HUB_CACHE)


def _hf_repo_dir(name: str) -> Path:
    """Where timm's weights for ``name`` live in the HF cache."""
    return _hf_cache_dir() / ("models--" + _hf_repo_id(name).replace("/", "--"))


def _hf_repo_id(name: str) -> str:
    from timm.models import get_pretrained_cfg
    cfg = get_pretrained_cfg(name)
    return (cfg.hf_hub_id if cfg is not None and cfg.hf_hub_id else f"timm/{name}")


def _not_found_message(encoder: str, name: str, reason: str) -> str:
    return (
        f"No weights for encoder {encoder!r} (timm model {name}): {reason}. Three ways to provide them:\n"
        f"  1. pass weights=PATH to a .pth or .safetensors file (a timm state dict, or the official "
        f"torch-hub checkpoint such as {_hub_filename(name)});\n"
        f"  2. put timm's weights in the Hugging Face cache at {_hf_repo_dir(name)} (on a machine with "
        f"network: python -c \"import timm; timm.create_model('{name}', pretrained=True)\", then copy "
        f"{_hf_cache_dir()}), or the torch-hub checkpoint at {_torch_hub_path(name)};\n"
        f"  3. allow download: pass download=True (encoder.download=true) or set {ALLOW_DOWNLOAD_ENV}=1.")


# --- reading and converting state dicts ------------------------------------------------------
def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read tensors from a ``.safetensors`` file or a ``torch.save`` file, without running pickled code.

    Args:
        path: the file.

    Returns:
        the raw mapping stored in the file (possibly nested, e.g. ``{"model": {...}}``).

    Raises:
        WeightsNotFoundError: the file does not exist (no three-ways text: callers add it).
        WeightsFileError: the file is corrupt, not a weights file, or holds Python objects
            that only an unsafe unpickler could restore.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsNotFoundError(f"weights file {str(path)!r} does not exist")
    with open(path, "rb") as f:
        head = f.read(9)
    is_safetensors = path.suffix == ".safetensors" or (len(head) == 9 and head[8:9] == b"{")
    try:
        if is_safetensors:
            from safetensors.torch import load_file
            return load_file(str(path), device="cpu")
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - every reader failure becomes one clear error naming the file
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "weights_only" in str(e) or "Weights only load failed" in str(e):
            raise WeightsFileError(
                f"weights file {str(path)!r} holds Python objects besides tensors and would need an "
                f"unsafe unpickler; re-save only the state dict (torch.save(model.state_dict(), path)) "
                f"or convert it to .safetensors ({msg})") from e
        kind = "safetensors" if is_safetensors else "PyTorch (torch.save)"
        raise WeightsFileError(
            f"cannot read weights file {str(path)!r} as a {kind} file; it may be truncated or corrupt "
            f"(re-download or re-save it): {type(e).__name__}: {msg}") from e


def _flatten_checkpoint(obj, path: str) -> dict[str, torch.Tensor]:
    """Unwrap ``{"teacher"|"model"|"state_dict"|"module": {...}}`` nesting; keep tensor entries."""
    while isinstance(obj, dict) and not any(_PATCH_KEY in str(k) for k in obj):
        inner = next((obj[k] for k in _NESTING_KEYS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict):
        raise WeightsFileError(f"weights file {path!r} holds a {type(obj).__name__}, expected a state dict "
                               "(a mapping from parameter names to tensors)")
    return {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def _strip_prefix(sd: dict[str, torch.Tensor], path: str) -> dict[str, torch.Tensor]:
    """Keep the ViT backbone: drop ``module.``/``model.``/``backbone.``/``teacher.backbone.`` prefixes."""
    prefixes = sorted({k[: -len(_PATCH_KEY)] for k in sd if k.endswith(_PATCH_KEY)}, key=len)
    if not prefixes:
        raise WeightsFileError(
            f"weights file {path!r} has no '{_PATCH_KEY}' entry, so it is not a ViT state dict "
            f"(first keys: {', '.join(list(sd)[:8]) or 'none'})")
    prefix = next((p for p in prefixes if "teacher" in p), prefixes[0])
    if not prefix:
        return sd
    log.debug("weights %s: using entries under prefix %r", path, prefix)
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def is_hub_format(sd: dict[str, torch.Tensor]) -> bool:
    """True for the official DINOv2 (torch-hub / facebookresearch) key layout."""
    return ("mask_token" in sd or "register_tokens" in sd
            or any(".mlp.w12." in k for k in sd) or any(re.match(r"blocks\.\d+\.\d+\.", k) for k in sd))


def hub_to_timm(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Convert an official DINOv2 state dict to timm's layout (the same mapping as timm's loader).

    * ``mask_token`` (used only in training) is dropped;
    * chunked blocks ``blocks.<chunk>.<i>.`` (training checkpoints) become ``blocks.<i>.``;
    * SwiGLU ``mlp.w12`` / ``mlp.w3`` (ViT-g) become ``mlp.fc1`` / ``mlp.fc2``;
    * with registers, timm keeps the position embedding for patches only: ``register_tokens``
      -> ``reg_token``, ``cls_token + pos_embed[:, :1]`` -> ``cls_token``, ``pos_embed[:, 1:]``
      -> ``pos_embed``.

    Args:
        sd: state dict with hub keys (``blocks.0.ls1.gamma``, ``pos_embed`` (1, 1 + G*G, D), ...).

    Returns:
        a new state dict with timm keys (position embeddings still at the checkpoint's grid).
    """
    sd = {re.sub(r"^blocks\.\d+\.(\d+)\.", r"blocks.\1.", k): v for k, v in sd.items()}
    sd.pop("mask_token", None)
    out: dict[str, torch.Tensor] = {}
    if "register_tokens" in sd:
        out["reg_token"] = sd.pop("register_tokens")
        pos = sd.pop("pos_embed")  # (1, 1 + G*G, D)
        out["cls_token"] = sd.pop("cls_token") + pos[:, :1]
        out["pos_embed"] = pos[:, 1:]  # (1, G*G, D)
    for k, v in sd.items():
        out[k.replace(".mlp.w12.", ".mlp.fc1.").replace(".mlp.w3.", ".mlp.fc2.")] = v
    return out


def _suggest_variant(sd: dict[str, torch.Tensor]) -> str:
    w = sd.get(_PATCH_KEY)
    variant = _VARIANT_OF_DIM.get(int(w.shape[0])) if w is not None else None
    if variant is None:
        return ""
    return f" These weights look like {encoder_name(variant, 'reg_token' in sd)!r}."


def _fit_to_model(sd: dict[str, torch.Tensor], model: nn.Module, path: str, encoder: str) -> dict[str, torch.Tensor]:
    """timm-layout state dict -> exactly the model's keys and shapes (position embeddings resampled).

    Raises:
        WeightsFileError: missing, unexpected or mis-shaped entries (all listed).
    """
    from timm.models.vision_transformer import checkpoint_filter_fn

    own = model.state_dict()
    if not any(k.startswith("head.") for k in own):  # num_classes=0: a classifier head is unused
        sd = {k: v for k, v in sd.items() if not k.startswith("head.")}
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    mismatched = [f"{k} {tuple(sd[k].shape)} != {tuple(own[k].shape)}" for k in own
                  if k in sd and k != "pos_embed" and sd[k].shape != own[k].shape]
    if not (missing or unexpected or mismatched):
        try:  # resamples pos_embed (and patch_embed) from the checkpoint's grid to the model's
            sd = checkpoint_filter_fn(sd, model)
        except RuntimeError as e:
            mismatched = [f"pos_embed {tuple(sd['pos_embed'].shape)} cannot be resampled to "
                          f"{tuple(own['pos_embed'].shape)} ({e})"]
        mismatched += [f"{k} {tuple(sd[k].shape)} != {tuple(own[k].shape)}" for k in own
                       if k in sd and k == "pos_embed" and sd[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        def show(items):
            return ", ".join(items[:8]) + (f" (+{len(items) - 8} more)" if len(items) > 8 else "")
        parts = [f"{label} [{show(items)}]" for label, items in
                 (("missing", missing), ("unexpected", unexpected), ("shape mismatch (file != model)", mismatched))
                 if items]
        raise WeightsFileError(f"weights file {path!r} does not fit encoder {encoder!r}: " + "; ".join(parts)
                               + "." + _suggest_variant(sd))
    return {k: v.to(dtype=own[k].dtype).contiguous() for k, v in sd.items()}


def _file_digest(path: Path, length: int = 12) -> str:
    """sha256 of the file bytes (HF cache blobs are named by it, so those cost nothing)."""
    real = Path(os.path.realpath(path))
    if re.fullmatch(r"[0-9a-f]{64}", real.name):
        return real.name[:length]
    h = hashlib.sha256()
    with open(real, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()[:length]


# --- finding weights locally -----------------------------------------------------------------
def _hub_filename(name: str) -> str:
    from timm.models import get_pretrained_cfg
    cfg = get_pretrained_cfg(name)
    return Path(cfg.url).name if cfg is not None and cfg.url else f"{name}.pth"


def _torch_hub_path(name: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / _hub_filename(name)


def find_cached_weights(name: str) -> Path | None:
    """A local copy of timm's weights for ``name`` (HF cache, then torch-hub folder); never the network."""
    from huggingface_hub import try_to_load_from_cache
    repo = _hf_repo_id(name)
    for filename in _HF_FILES:
        try:
            found = try_to_load_from_cache(repo, filename)
        except Exception as e:  # noqa: BLE001 - a broken cache must not stop the other lookups
            log.debug("HF cache lookup for %s/%s failed: %s", repo, filename, e)
            continue
        if isinstance(found, str) and os.path.isfile(found):
            return Path(found)
    hub = _torch_hub_path(name)
    return hub if hub.is_file() else None


def _download_allowed(download: bool) -> bool:
    return bool(download) or os.environ.get(ALLOW_DOWNLOAD_ENV, "").strip().lower() in ("1", "true", "yes")


# --- the encoder -----------------------------------------------------------------------------
class DINOv2Encoder(Encoder):
    """Frozen DINOv2 ViT: images ``(B, H, W, 3)`` uint8 / ``(B, 3, H, W)`` float -> ``(B, N, D)``.

    Args:
        variant: ``vits14`` | ``vitb14`` | ``vitl14`` | ``vitg14``.
        registers: use the model with 4 register tokens (``..._reg4_dinov2``).
        image_size: side S the images are resized to; a positive multiple of 14.
        tokens: ``patch`` ``(B, (S/14)**2, D)`` | ``cls`` ``(B, 1, D)`` | ``pooled`` ``(B, 1, D)``.
        weights: ``None`` (local cache, then download if allowed), a path to a ``.pth`` /
            ``.safetensors`` file (timm or official torch-hub layout), or ``"random"``.
        download: allow timm to download the weights when no local copy exists
            (also allowed by the environment variable ``WMPC_ALLOW_DOWNLOAD=1``).
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when available).
        autocast_bf16: run the ViT under bfloat16 autocast (CUDA only; tokens are returned as float32).
        chunk_size: images per forward pass in :meth:`encode`.
        seed: initialisation seed for ``weights="random"``.

    Raises:
        ValueError: unknown variant or token mode, bad ``image_size``, bf16 autocast off CUDA.
        WeightsNotFoundError: no weights found (the message lists the three ways to provide them).
        WeightsFileError: a weights file is corrupt or does not fit the variant.
    """

    backend = "dinov2"

    def __init__(self, variant: str = "vits14", registers: bool = False, image_size: int = 224,
                 tokens: str = "patch", weights: str | os.PathLike | None = None, download: bool = False,
                 device: str | torch.device = "cpu", autocast_bf16: bool = False, chunk_size: int = 64,
                 seed: int = 0):
        if variant not in VARIANTS:
            raise ValueError(f"unknown DINOv2 variant {variant!r}; expected one of {', '.join(VARIANTS)}")
        if isinstance(image_size, bool) or not isinstance(image_size, numbers.Integral) or image_size <= 0 \
                or image_size % PATCH_SIZE:
            raise ValueError(f"image_size must be a positive multiple of the patch size {PATCH_SIZE} "
                             f"(e.g. 224 or 56), got {image_size!r}")
        if tokens not in TOKEN_MODES:
            raise ValueError(f"tokens must be one of {', '.join(TOKEN_MODES)}, got {tokens!r}")
        if int(chunk_size) <= 0:
            raise ValueError(f"chunk_size must be a positive number of images, got {chunk_size!r}")
        super().__init__(int(image_size))
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        device = torch.device(device)
        if autocast_bf16 and device.type != "cuda":
            raise ValueError(f"autocast_bf16=True needs a CUDA device, got device={str(device)!r}; "
                             "pass device=cuda (or auto on a GPU machine) or autocast_bf16=False")
        self.variant = variant + ("-reg" if registers else "")
        self.registers = bool(registers)
        self.timm_name = timm_name(variant, registers)
        self.token_mode = tokens
        self.autocast_bf16 = bool(autocast_bf16)
        self.chunk_size = int(chunk_size)
        self.trainable = False
        self._weights_file: Path | None = None
        self.model, self.weights_source = self._build(weights, download, seed)

        import timm.data
        data_cfg = timm.data.resolve_data_config({}, model=self.model)
        self.mean = tuple(float(m) for m in data_cfg["mean"])
        self.std = tuple(float(s) for s in data_cfg["std"])
        self.interpolation = data_cfg["interpolation"]
        if self.interpolation not in ("bicubic", "bilinear", "nearest"):
            log.warning("timm interpolation %r not available in torch; using bicubic", self.interpolation)
            self.interpolation = "bicubic"
        self.model.eval().requires_grad_(False)
        self.to(device)

    # --- construction -----------------------------------------------------------------
    @property
    def name(self) -> str:
        """Registered name, e.g. ``dinov2-vits14-reg``."""
        return f"dinov2-{self.variant}"

    def _create(self, pretrained: bool = False, meta: bool = False) -> nn.Module:
        """The timm ViT at ``image_size``; ``meta=True`` skips initialisation (weights come next)."""
        import timm
        with torch.device("meta") if meta else contextlib.nullcontext():
            return timm.create_model(self.timm_name, pretrained=pretrained, num_classes=0,
                                     img_size=self.image_size)

    def _build(self, weights, download: bool, seed: int) -> tuple[nn.Module, str]:
        if isinstance(weights, str) and weights == "random":
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(seed))
                model = self._create()
            self.pretrained = False
            return model, "random"
        if weights is not None and not (isinstance(weights, str) and weights in ("auto", "pretrained", "")):
            path = Path(weights).expanduser()
            if not path.is_file():
                what = "is not a file" if path.exists() else "does not exist"
                raise WeightsNotFoundError(_not_found_message(
                    self.name, self.timm_name, f"weights file {str(path)!r} {what}"))
            return self._load_file(path), str(path)
        cached = find_cached_weights(self.timm_name)
        if cached is not None:
            log.info("%s: loading weights from the local cache %s", self.name, cached)
            return self._load_file(cached), str(cached)
        if _download_allowed(download):
            log.info("%s: downloading %s through timm", self.name, self.timm_name)
            try:
                model = self._create(pretrained=True)
            except Exception as e:  # noqa: BLE001 - no network, offline mode, server error ...
                raise WeightsNotFoundError(_not_found_message(
                    self.name, self.timm_name, f"the download failed ({type(e).__name__}: {e})")) from e
            self.pretrained = True
            self._weights_file = find_cached_weights(self.timm_name)
            return model, f"download:{self.timm_name}"
        raise WeightsNotFoundError(_not_found_message(
            self.name, self.timm_name, "none in the local cache and download not allowed"))

    def _load_file(self, path: Path) -> nn.Module:
        raw = load_state_dict_file(path)
        sd = _strip_prefix(_flatten_checkpoint(raw, str(path)), str(path))
        if is_hub_format(sd):
            sd = hub_to_timm(sd)
        model = self._create(meta=True)
        sd = _fit_to_model(sd, model, str(path), self.name)
        model.load_state_dict(sd, strict=True, assign=True)  # meta tensors -> the file's tensors
        self.pretrained = True
        self._weights_file = path
        return model

    # --- Encoder interface ------------------------------------------------------------
    @property
    def num_tokens(self) -> int:  # N
        return (self.image_size // PATCH_SIZE) ** 2 if self.token_mode == "patch" else 1

    @property
    def dim(self) -> int:  # D
        return int(self.model.embed_dim)

    def weights_digest(self) -> str:
        """Hash of the weights: of the file's bytes when loaded from a file, else of the tensors."""
        if self._weights_digest is None and self._weights_file is not None:
            self._weights_digest = _file_digest(self._weights_file)
        return super().weights_digest()

    @property
    def fingerprint(self) -> str:
        return super().fingerprint + (":bf16" if self.autocast_bf16 else "")

    def train(self, mode: bool = True):
        """The ViT stays in eval mode whatever ``mode`` says (it is frozen)."""
        super().train(mode)
        self.model.eval()
        return self

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised ``(B, 3, S, S)`` -> ``(B, N, D)`` (see the module docstring for the modes)."""
        ctx = (torch.autocast("cuda", dtype=torch.bfloat16) if self.autocast_bf16 and x.is_cuda
               else contextlib.nullcontext())
        with ctx:
            feats = self.model.forward_features(x)  # (B, 1 + R + N, D) after the final norm
        if self.token_mode == "cls":
            return feats[:, :1]  # (B, 1, D)
        patch = feats[:, self.model.num_prefix_tokens:]  # (B, N, D), CLS and registers removed
        if self.token_mode == "pooled":
            return patch.float().mean(dim=1, keepdim=True)  # (B, 1, D)
        return patch

    def extra_repr(self) -> str:
        return super().extra_repr() + f", timm={self.timm_name}, weights={self.weights_source}"


# --- registration ----------------------------------------------------------------------------
def _builder(variant: str, registers: bool):
    def build(**options) -> DINOv2Encoder:
        return DINOv2Encoder(variant=variant, registers=registers, **options)
    build.__doc__ = f"Build the frozen {encoder_name(variant, registers)} encoder (see DINOv2Encoder)."
    return build


for _variant in VARIANTS:
    for _reg in (False, True):
        register_encoder(encoder_name(_variant, _reg))(_builder(_variant, _reg))
register_encoder("dinov2")(_builder("vits14", False))


def weights_status() -> list[dict]:
    """For ``wmpc info``: whether each variant's weights are in the local cache, and where (no network).

    Returns:
        one dict per registered name (the ``dinov2`` alias included) with ``name``,
        ``available`` (bool) and ``detail`` (str).
    """
    rows = []
    for variant in VARIANTS:
        for reg in (False, True):
            name, tname = encoder_name(variant, reg), timm_name(variant, reg)
            found = find_cached_weights(tname)
            detail = (str(found) if found is not None else
                      f"not found locally (expected under {_hf_repo_dir(tname)}); pass weights=PATH, "
                      f"or download=True / {ALLOW_DOWNLOAD_ENV}=1")
            rows.append({"name": name, "available": found is not None, "detail": detail})
    alias = next(r for r in rows if r["name"] == "dinov2-vits14")
    rows.append({**alias, "name": "dinov2", "detail": "= dinov2-vits14: " + alias["detail"]})
    return rows
