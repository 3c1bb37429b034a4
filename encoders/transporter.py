"""``transporter``: object keypoints learned by transporting pixels between two frames of one episode.

After the Transporter of Kulkarni et al. (2019, "Unsupervised Learning of Object Keypoints for
Perception and Control"). A keypoint net maps a frame to ``K`` spatial-softmax keypoints. Training takes
two frames of one episode, a source ``x_s`` and a target ``x_t``, draws a Gaussian mask around every
keypoint of each, and rebuilds the target from the source with only the masked pixels changed:

    M = 1 - prod_k (1 - G(kp_k))                      (the union of the keypoints' Gaussians)
    x_hat = (1 - M_s) (1 - M_t) x_s + M_t x_t + refine(...)

Whatever differs between the two frames (the objects that moved, where they were and where they are)
must lie under some keypoint's mask, or the loss cannot fall. Two choices differ from the paper, both so
that the keypoints spread over an object instead of meeting at its centre: the transport moves pixels,
not deep features (a deep feature at an object's centre already describes the whole object, so one
keypoint there suffices and its coordinates say nothing about the object's turn), and the refine net is
three 3x3 convolutions (it cannot redraw what no mask pasted). The keypoint map has half the image's side.

The token is the keypoints themselves, ``(B, 1, 2K)`` (x, y of each in [-1, 1], then standardised with one
scale), so a latent distance is the mean squared displacement of the keypoints: an object turned moves
the keypoints on its ends, one pushed moves all of its keypoints. On Push-T (64 px) the keypoints sit on
the block and the pusher, from pixels alone (README, "Encoder backends").

No decoder: a token holds where things are, not what they look like. Train with
``wmpc train-encoder encoder=transporter data=DIR out=DIR`` (pairs of frames of one episode).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from . import register_encoder
from ._conv import SpatialSoftmax, _norm, coord_channels
from ._trainable import TrainableEncoder, build_trainable, trainable_status

__all__ = ["TransporterEncoder", "keypoint_masks", "weights_status"]


def keypoint_masks(kp: torch.Tensor, size: int, std: float) -> torch.Tensor:
    """The union of isotropic Gaussians around keypoints: ``kp (B, K, 2)`` in [-1, 1] -> ``(B, 1, size, size)``.

    ``std`` is in the same [-1, 1] units (0.08: 2.6 px of a 64 px frame). Each mask is 1 at its
    keypoint; the union is ``1 - prod_k (1 - G_k)``, so overlapping keypoints do not exceed 1.
    """
    grid = torch.linspace(-1.0, 1.0, size, device=kp.device, dtype=kp.dtype)
    dx = (grid.view(1, 1, 1, size) - kp[..., 0, None, None]) ** 2  # (B, K, 1, S)
    dy = (grid.view(1, 1, size, 1) - kp[..., 1, None, None]) ** 2  # (B, K, S, 1)
    g = torch.exp(-(dx + dy) / (2.0 * std ** 2))  # (B, K, S, S)
    return 1.0 - torch.prod(1.0 - g, dim=1, keepdim=True)


class TransporterEncoder(TrainableEncoder):
    """Keypoint encoder ``(B, 3, S, S) -> (B, 1, 2K)`` trained by pixel transport between two frames."""

    backend = "transporter"
    token_mode = "keypoints"
    ARCH_KEYS = ("image_size", "num_keypoints", "width", "refine_width")

    def __init__(self, image_size: int = 64, num_keypoints: int = 8, width: int = 16, refine_width: int = 16,
                 mask_std: float = 0.08, fg_weight: float = 10.0, seed: int = 0):
        """
        Args:
            image_size: input side S (even); the keypoint map is S/2 x S/2.
            num_keypoints: K, keypoints per frame; the token has 2K entries. Enough to cover every
                moving object with masks of ``mask_std`` (Push-T's block and pusher at 64 px: 8).
            width: channels of the keypoint net (its later layers use 2 * width).
            refine_width: channels of the refine net (training only).
            mask_std: the Gaussian masks' standard deviation in [-1, 1] units (training only).
            fg_weight: extra loss weight on target pixels unlike the batch background (see
                ``foreground_weights``), so a small object's move is not lost in the mean; 0: off.
            seed: seed of the weight initialisation.

        Raises:
            ValueError: sizes or settings out of range.
        """
        if int(image_size) < 8 or int(image_size) % 2:
            raise ValueError(f"image_size must be an even number >= 8, got {image_size}")
        if int(num_keypoints) < 1 or int(width) < 1 or int(refine_width) < 1:
            raise ValueError(f"num_keypoints, width and refine_width must be >= 1, got {num_keypoints}, "
                             f"{width}, {refine_width}")
        if not 0.0 < float(mask_std) <= 1.0:
            raise ValueError(f"mask_std must lie in (0, 1] (the masks' width in [-1, 1] image units), got {mask_std}")
        if not float(fg_weight) >= 0.0:
            raise ValueError(f"fg_weight must be >= 0, got {fg_weight}")
        K, w, rw = int(num_keypoints), int(width), int(refine_width)
        super().__init__(dict(image_size=int(image_size), num_keypoints=K, width=w, refine_width=rw,
                              mask_std=float(mask_std), fg_weight=float(fg_weight), seed=int(seed)))
        self.token_shift = torch.zeros(2 * K)  # (D,): the base class sizes it from a `dim` config key
        self.num_keypoints, self.mask_std, self.fg_weight = K, float(mask_std), float(fg_weight)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.trunk = nn.Sequential(nn.Conv2d(5, w, 4, 2, 1), _norm(w), nn.SiLU(),
                                       nn.Conv2d(w, 2 * w, 3, padding=1), _norm(2 * w), nn.SiLU(),
                                       nn.Conv2d(2 * w, 2 * w, 3, padding=1), _norm(2 * w), nn.SiLU(),
                                       nn.Conv2d(2 * w, 2 * w, 3, padding=1), _norm(2 * w), nn.SiLU(),
                                       nn.Conv2d(2 * w, K, 1))
            self.softmax = SpatialSoftmax()
            self.refine = nn.Sequential(nn.Conv2d(4, rw, 3, padding=1), nn.SiLU(),
                                        nn.Conv2d(rw, rw, 3, padding=1), nn.SiLU(),
                                        nn.Conv2d(rw, 3, 3, padding=1))

    @property
    def num_tokens(self) -> int:
        return 1

    @property
    def dim(self) -> int:
        return 2 * self.num_keypoints

    def keypoints(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised frames ``(B, 3, S, S)`` -> keypoints ``(B, K, 2)``, (x, y) in [-1, 1]."""
        return self.softmax(self.trunk(torch.cat([x, coord_channels(x)], dim=1)))

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        return self.keypoints(x).reshape(x.shape[0], 1, self.dim)

    def transport(self, x_src: torch.Tensor, x_tgt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The target rebuilt from the source: ``(x_hat (B, 3, S, S), keypoints of the target (B, K, 2))``."""
        B, S = x_src.shape[0], x_src.shape[-1]
        kp = self.keypoints(torch.cat([x_src, x_tgt]))  # (2B, K, 2)
        masks = keypoint_masks(kp, S, self.mask_std)  # (2B, 1, S, S)
        m_src, m_tgt = masks[:B], masks[B:]
        keep = (1.0 - m_src) * (1.0 - m_tgt)  # source pixels no keypoint claims
        pasted = keep * x_src + m_tgt * x_tgt
        return pasted + self.refine(torch.cat([pasted, keep], dim=1)), kp[B:]

    def training_loss(self, x_src: torch.Tensor, x_tgt: torch.Tensor, generator: torch.Generator | None = None
                      ) -> tuple[torch.Tensor, dict[str, float]]:
        """Squared error of the transported target (weighted by ``fg_weight`` on what is not background).

        Args:
            x_src, x_tgt: normalised frames ``(B, 3, S, S)`` of the same episodes (any two times).
            generator: unused (the loss has no noise).
        """
        rec, _ = self.transport(x_src, x_tgt)
        se = (rec - x_tgt).pow(2)
        w = self.foreground_weights(x_tgt, self.fg_weight)
        mse = se.mean()
        loss = (se * w).mean() if w is not None else mse
        return loss, {"loss": loss.item(), "mse": mse.item()}


@register_encoder("transporter")
def _transporter(checkpoint=None, weights=None, **options) -> TransporterEncoder:
    return build_trainable(TransporterEncoder, checkpoint=checkpoint, weights=weights, **options)


def weights_status() -> list[dict]:
    return trainable_status("transporter")
