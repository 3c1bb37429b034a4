"""DINOv2 encoder: weight formats, agreement with timm, token modes, frozen-ness, errors.

Offline and small: ViT-S/14 with random (but non-trivial) weights saved to temporary files in
timm and official torch-hub layouts, mostly encoded at 28 or 56 pixels.
"""
from __future__ import annotations

import argparse
import hashlib

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

timm = pytest.importorskip("timm")

from encoders import make_encoder  # noqa: E402
from encoders.dinov2 import (WeightsFileError, WeightsNotFoundError, timm_name,  # noqa: E402
                             weights_status)

SMALL = 56  # image side for most checks: 4x4 patches


# --- helpers ---------------------------------------------------------------------------------
def random_timm_state_dict(registers: bool, seed: int) -> dict[str, torch.Tensor]:
    """ViT-S/14 weights at the checkpoints' 518 pixels (37x37 grid) in timm layout.

    Layer-scale gammas, norms and embeddings are scaled up from timm's init (1e-5 layer scale makes
    every block nearly the identity), so a wrong key mapping changes the tokens visibly.
    """
    torch.manual_seed(seed)
    with torch.device("meta"):
        model = timm.create_model(timm_name("vits14", registers), num_classes=0)
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, v in model.state_dict().items():
        scale = 0.5 if ("gamma" in k or "token" in k or "pos_embed" in k) else 0.05
        t = torch.randn(v.shape, generator=g) * scale
        if k.endswith("norm1.weight") or k.endswith("norm2.weight") or k == "norm.weight":
            t = 1.0 + t
        sd[k] = t
    return sd


def timm_to_hub(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The official DINOv2 layout of the same weights (what ``dinov2_vits14[_reg4]_pretrain.pth`` holds)."""
    hub = {k: v.clone() for k, v in sd.items()}
    d = sd["cls_token"].shape[-1]
    hub["mask_token"] = torch.zeros(1, d)
    if "reg_token" in hub:  # hub keeps a CLS position embedding; timm folds it into cls_token
        pos_cls = torch.full((1, 1, d), 0.25)
        hub["register_tokens"] = hub.pop("reg_token")
        hub["cls_token"] = sd["cls_token"] - pos_cls
        hub["pos_embed"] = torch.cat([pos_cls, sd["pos_embed"]], dim=1)  # (1, 1 + 37*37, D)
    return hub


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "reg"])
def weight_files(request, tmp_path_factory):
    """The same random weights in every supported layout, plus the timm-layout dict."""
    reg = request.param
    d = tmp_path_factory.mktemp("reg" if reg else "plain")
    sd = random_timm_state_dict(reg, seed=1 + reg)
    hub = timm_to_hub(sd)
    files = {"timm.safetensors": d / "timm.safetensors", "timm.pth": d / "timm.pth",
             "hub.pth": d / "dinov2_vits14_pretrain.pth", "hub.safetensors": d / "hub.safetensors",
             "wrapped.pth": d / "wrapped.pth", "teacher.pth": d / "teacher.pth"}
    save_file(sd, str(files["timm.safetensors"]))
    torch.save(sd, files["timm.pth"])
    torch.save(hub, files["hub.pth"])
    save_file(hub, str(files["hub.safetensors"]))
    torch.save({"model": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}, files["wrapped.pth"])
    # a training checkpoint: teacher and student backbones, chunked blocks, a head to ignore
    chunked = {("blocks.%d.%s" % (int(k.split(".")[1]) // 4, k.split(".", 1)[1]) if k.startswith("blocks.")
                else k): v for k, v in hub.items()}
    torch.save({"model": {**{f"teacher.backbone.{k}": v for k, v in chunked.items()},
                          **{f"student.backbone.{k}": torch.zeros_like(v) for k, v in chunked.items()},
                          "teacher.dino_head.last_layer.weight": torch.zeros(8, 4)},
                "iteration": 10}, files["teacher.pth"])
    return reg, sd, files


def make(files, key="timm.safetensors", reg=False, **kw):
    kw.setdefault("image_size", SMALL)
    return make_encoder("dinov2-vits14-reg" if reg else "dinov2-vits14", weights=str(files[key]), **kw)


def images(b=3, size=SMALL, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (b, size, size, 3), dtype=np.uint8)


# --- weights ---------------------------------------------------------------------------------
def test_every_file_layout_gives_the_same_tokens(weight_files):
    reg, _, files = weight_files
    x = images()
    ref = make(files, reg=reg).encode(x)
    assert ref.shape == (3, 16, 384)
    for key in ("timm.pth", "hub.pth", "hub.safetensors", "wrapped.pth", "teacher.pth"):
        z = make(files, key, reg=reg).encode(x)
        torch.testing.assert_close(z, ref, atol=1e-5, rtol=1e-5, msg=f"{key} differs from timm.safetensors")


def test_tokens_equal_timm_forward_features(weight_files):
    """Against timm's own loader (from the hub file) and forward_features: patch tokens after the
    final norm with CLS and registers removed; cls is the first token."""
    reg, _, files = weight_files
    ref_model = timm.create_model(timm_name("vits14", reg), pretrained=True, num_classes=0, img_size=SMALL,
                                  pretrained_cfg_overlay={"file": str(files["hub.pth"])}).eval()
    cfg = timm.data.resolve_data_config({}, model=ref_model)
    x = images(2)
    xf = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255.0
    xn = (xf - torch.tensor(cfg["mean"]).view(1, 3, 1, 1)) / torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        feats = ref_model.forward_features(xn)  # (B, 1 + R + 16, 384)
    assert feats.shape[1] == 1 + (4 if reg else 0) + 16
    enc = make(files, "timm.safetensors", reg=reg)
    torch.testing.assert_close(enc.encode(x), feats[:, -16:], atol=1e-5, rtol=1e-5)
    enc.token_mode = "cls"
    torch.testing.assert_close(enc.encode(x), feats[:, :1], atol=1e-5, rtol=1e-5)


def test_token_modes_at_224(weight_files):
    reg, _, files = weight_files
    if reg:
        pytest.skip("checked once, on the plain model")
    x = images(2, size=224)
    enc = make(files, image_size=224)
    assert (enc.num_tokens, enc.dim) == (256, 384)
    patch = enc.encode(x)
    enc = make(files, image_size=224, tokens="cls")
    assert (enc.num_tokens, enc.dim) == (1, 384)
    cls = enc.encode(x)
    enc.token_mode = "pooled"
    pooled = enc.encode(x)
    assert patch.shape == (2, 256, 384) and patch.dtype == torch.float32
    assert cls.shape == (2, 1, 384) and pooled.shape == (2, 1, 384)
    torch.testing.assert_close(pooled, patch.mean(dim=1, keepdim=True), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(cls, pooled, atol=1e-3)


def test_uint8_hwc_and_float_chw_agree_and_resize(weight_files):
    reg, _, files = weight_files
    enc = make(files, reg=reg, image_size=28)
    x = images(2, size=28)
    xf = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255.0
    # two input paths (uint8 HWC vs float CHW) and two batch sizes: equal up to float reordering,
    # which differs across CPUs (vector width, thread split); a preprocessing bug is O(1) off
    torch.testing.assert_close(enc.encode(x), enc.encode(xf), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(enc.encode(x[0]), enc.encode(xf[0])[None][0], atol=1e-4, rtol=1e-4)  # unbatched
    big = enc.encode(images(2, size=64))  # resized to 28 inside
    assert big.shape == (2, 4, 384) and torch.isfinite(big).all()


def test_frozen_parameters_unchanged_and_no_grad(weight_files):
    reg, sd, files = weight_files
    enc = make(files, reg=reg, image_size=28, chunk_size=2)
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    enc.train()  # a parent module switching to train mode must not unfreeze the ViT
    assert not enc.model.training and not enc.trainable
    z = enc.encode(images(5, size=28))  # 3 chunks
    assert z.shape == (5, 4, 384) and not z.requires_grad
    assert all(not p.requires_grad for p in enc.parameters())
    for k, v in enc.state_dict().items():
        assert torch.equal(v, before[k]), k
    torch.testing.assert_close(enc.model.blocks[3].ls1.gamma, sd["blocks.3.ls1.gamma"])


def test_fingerprint_tracks_weights_size_and_tokens(weight_files):
    reg, _, files = weight_files
    a = make(files, reg=reg, image_size=28)
    file_sha = hashlib.sha256(files["timm.safetensors"].read_bytes()).hexdigest()
    assert a.weights_digest() == file_sha[:12] and file_sha[:12] in a.fingerprint
    assert a.pretrained and "pretrained=True" in a.fingerprint
    assert ("vits14-reg" if reg else "vits14:") in a.fingerprint
    assert make(files, reg=reg, image_size=28).fingerprint == a.fingerprint
    assert make(files, "hub.pth", reg=reg, image_size=28).fingerprint != a.fingerprint
    assert make(files, reg=reg, image_size=42).fingerprint != a.fingerprint
    assert make(files, reg=reg, image_size=28, tokens="cls").fingerprint != a.fingerprint


def test_random_weights_only_by_name():
    a = make_encoder("dinov2", weights="random", image_size=28)
    b = make_encoder("dinov2-vits14", weights="random", image_size=28)
    assert not a.pretrained and "pretrained=False" in a.fingerprint
    assert a.fingerprint == b.fingerprint  # seeded: the same untrained weights every time


# --- where weights come from -----------------------------------------------------------------
@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "torchhub"))
    monkeypatch.delenv("WMPC_ALLOW_DOWNLOAD", raising=False)
    return tmp_path


def assert_three_ways(msg: str):
    assert "weights=PATH" in msg and ".safetensors" in msg and ".pth" in msg
    assert "Hugging Face cache" in msg and "models--timm--vit_small_patch14_dinov2.lvd142m" in msg
    assert "download=True" in msg and "WMPC_ALLOW_DOWNLOAD=1" in msg


def test_missing_weights_file_lists_three_ways(empty_caches):
    with pytest.raises(WeightsNotFoundError) as e:
        make_encoder("dinov2", weights=str(empty_caches / "nope.pth"), image_size=28)
    assert isinstance(e.value, FileNotFoundError)
    assert "nope.pth" in str(e.value)
    assert_three_ways(str(e.value))


def test_no_weights_anywhere_lists_three_ways(empty_caches):
    with pytest.raises(FileNotFoundError) as e:
        make_encoder("dinov2", image_size=28)
    assert_three_ways(str(e.value))
    assert not any(r["available"] for r in weights_status())


def test_weights_found_in_hf_cache(empty_caches, weight_files):
    reg, _, files = weight_files
    name = timm_name("vits14", reg)
    repo = empty_caches / "hf" / f"models--timm--{name}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    snap = repo / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "model.safetensors").write_bytes(files["timm.safetensors"].read_bytes())
    enc = make_encoder("dinov2-vits14-reg" if reg else "dinov2", image_size=SMALL)
    assert enc.pretrained and enc.weights_source == str(snap / "model.safetensors")
    torch.testing.assert_close(enc.encode(images(2)), make(files, reg=reg).encode(images(2)), atol=1e-4, rtol=1e-4)
    rows = {r["name"]: r for r in weights_status()}
    key = "dinov2-vits14-reg" if reg else "dinov2-vits14"
    assert rows[key]["available"] and "model.safetensors" in rows[key]["detail"]
    assert not rows["dinov2-vitb14"]["available"]


def test_corrupt_file_is_named(tmp_path, weight_files):
    _, _, files = weight_files
    trunc = tmp_path / "broken.safetensors"
    trunc.write_bytes(files["timm.safetensors"].read_bytes()[:5000])
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a checkpoint" * 10)
    for path in (trunc, junk):
        with pytest.raises(WeightsFileError, match=path.name):
            make_encoder("dinov2", weights=str(path), image_size=28)


def test_pickled_objects_are_refused(tmp_path, weight_files):
    _, sd, _ = weight_files
    path = tmp_path / "with_args.pth"
    torch.save({"model": sd, "args": argparse.Namespace(lr=1.0)}, path)
    with pytest.raises(WeightsFileError, match="unsafe unpickler"):
        make_encoder("dinov2", weights=str(path), image_size=28)


def test_weights_of_another_variant_are_refused_with_a_hint(weight_files):
    reg, _, files = weight_files
    other = "dinov2-vits14" if reg else "dinov2-vits14-reg"
    with pytest.raises(WeightsFileError) as e:
        make_encoder(other, weights=str(files["hub.pth"]), image_size=28)
    msg = str(e.value)
    assert ("unexpected [reg_token]" in msg) if reg else ("missing [reg_token]" in msg)
    assert f"look like {('dinov2-vits14-reg' if reg else 'dinov2-vits14')!r}" in msg
    with pytest.raises(WeightsFileError, match="shape mismatch"):
        make_encoder("dinov2-vitb14-reg" if reg else "dinov2-vitb14", weights=str(files["timm.pth"]),
                     image_size=28)


# --- bad inputs ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(weight_files):
    reg, _, files = weight_files
    return make(files, reg=reg, image_size=28)


@pytest.mark.parametrize("bad, match", [
    (np.zeros((28, 28), np.uint8), "uint8 of shape"),                     # rank 2
    (np.zeros((1, 2, 28, 28, 3), np.uint8), "uint8 of shape"),            # rank 5
    (np.zeros((2, 28, 28, 4), np.uint8), "3 channels"),                    # RGBA
    (np.zeros((2, 3, 28, 28), np.uint8), "channels-last"),                 # uint8 CHW
    (torch.zeros(2, 28, 28, 3), "channels-first"),                         # float HWC
    (torch.zeros(2, 1, 28, 28), "3 channels"),                             # grey
    (torch.full((1, 3, 28, 28), 255.0), r"\[0, 1\]"),                      # float pixels not divided
    (torch.full((1, 3, 28, 28), -0.5), r"\[0, 1\]"),
    (torch.full((1, 3, 28, 28), float("nan")), "NaN"),
    (torch.zeros(1, 3, 28, 28, dtype=torch.int64), "dtype"),
    ([[0, 1, 2]], "list"),
])
def test_bad_images_raise_value_error(tiny, bad, match):
    with pytest.raises(ValueError, match=match):
        tiny.encode(bad)


@pytest.mark.parametrize("options, match", [
    ({"image_size": 50}, "multiple of the patch size 14"),
    ({"image_size": 0}, "multiple of the patch size 14"),
    ({"image_size": 224.5}, "multiple of the patch size 14"),
    ({"tokens": "mean"}, "patch, cls, pooled"),
    ({"autocast_bf16": True, "device": "cpu"}, "CUDA"),
    ({"chunk_size": 0}, "chunk_size"),
])
def test_bad_options_raise_value_error(options, match):
    with pytest.raises(ValueError, match=match):
        make_encoder("dinov2", weights="random", **options)


def test_unknown_encoder_name_lists_known_ones():
    with pytest.raises(ValueError, match="dinov2-vits14-reg") as e:
        make_encoder("dinov2-vits16")
    assert "Did you mean" in str(e.value)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_close_to_float32(weight_files):
    reg, _, files = weight_files
    x = images(4)
    ref = make(files, reg=reg).encode(x)
    gpu = make(files, reg=reg, device="cuda")
    torch.testing.assert_close(gpu.encode(x).cpu(), ref, atol=1e-4, rtol=1e-4)
    bf16 = make(files, reg=reg, device="cuda", autocast_bf16=True)
    z = bf16.encode(x)
    assert z.dtype == torch.float32 and z.is_cuda and bf16.fingerprint.endswith(":bf16")
    cos = torch.nn.functional.cosine_similarity(z.cpu(), ref, dim=-1)
    assert cos.min() > 0.98


def test_hub_to_timm_renames_giant_swiglu_and_chunked_blocks():
    from encoders.dinov2 import hub_to_timm, is_hub_format
    hub = {"blocks.1.13.mlp.w12.weight": torch.ones(2), "blocks.1.13.mlp.w3.bias": torch.ones(1),
           "blocks.0.0.ls1.gamma": torch.ones(3), "mask_token": torch.zeros(1, 3), "norm.weight": torch.ones(3)}
    assert is_hub_format(hub)
    out = hub_to_timm(hub)
    assert set(out) == {"blocks.13.mlp.fc1.weight", "blocks.13.mlp.fc2.bias", "blocks.0.ls1.gamma", "norm.weight"}
    assert not is_hub_format(out)


def test_download_only_when_allowed(empty_caches, monkeypatch):
    from encoders.dinov2 import DINOv2Encoder
    calls = []

    def fake_create(self, pretrained=False, meta=False):
        calls.append(pretrained)
        if pretrained:
            raise ConnectionError("no network here")
        raise AssertionError("only the download path may build a model here")

    monkeypatch.setattr(DINOv2Encoder, "_create", fake_create)
    with pytest.raises(WeightsNotFoundError, match="none in the local cache"):
        make_encoder("dinov2", image_size=28)
    assert calls == []  # no download attempt without permission
    monkeypatch.setenv("WMPC_ALLOW_DOWNLOAD", "1")
    with pytest.raises(WeightsNotFoundError, match="download failed") as e:
        make_encoder("dinov2", image_size=28)
    assert calls == [True]
    assert_three_ways(str(e.value))
    monkeypatch.delenv("WMPC_ALLOW_DOWNLOAD")
    with pytest.raises(WeightsNotFoundError, match="download failed"):
        make_encoder("dinov2", image_size=28, download=True)
    assert calls == [True, True]
