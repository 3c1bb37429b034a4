"""DINOv2 weight files: names, local caches, reading, hub -> timm conversion, fitting to a model.

Machinery for :mod:`encoders.dinov2` (which documents the lookup order and re-exports the public
names): timm model names per variant, the Hugging Face cache and torch-hub checkpoint folder
(never the network), ``.safetensors`` / ``torch.save`` files read without running pickled code,
the official torch-hub layout converted to timm's, and a state dict checked against a model's keys
and shapes with its position embeddings resampled.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path

import torch
import torch.nn as nn

__all__ = ["VARIANTS", "ALLOW_DOWNLOAD_ENV", "WeightsNotFoundError", "WeightsFileError", "timm_name",
           "encoder_name", "load_state_dict_file", "is_hub_format", "hub_to_timm", "find_cached_weights"]

log = logging.getLogger(__name__)

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
