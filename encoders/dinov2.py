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
``safetensors`` or ``torch.load(weights_only=True)``, so no pickled code ever runs. The weight-file
machinery (caches, reading, conversion, fitting) lives in :mod:`encoders._dinov2_weights`.
"""
from __future__ import annotations

import contextlib
import logging
import numbers
import os
from pathlib import Path

import torch
import torch.nn as nn

from . import register_encoder
from ._dinov2_weights import (ALLOW_DOWNLOAD_ENV, VARIANTS, WeightsFileError, WeightsNotFoundError,
                              _download_allowed, _file_digest, _fit_to_model, _flatten_checkpoint,
                              _hf_repo_dir, _not_found_message, _strip_prefix, encoder_name,
                              find_cached_weights, hub_to_timm, is_hub_format, load_state_dict_file,
                              timm_name)
from .base import Encoder

__all__ = ["DINOv2Encoder", "WeightsNotFoundError", "WeightsFileError", "VARIANTS", "TOKEN_MODES",
           "weights_status", "load_state_dict_file", "hub_to_timm"]

log = logging.getLogger(__name__)

PATCH_SIZE = 14
TOKEN_MODES = ("patch", "cls", "pooled")


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
