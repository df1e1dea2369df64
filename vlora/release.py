"""The authors' released checkpoints (their LLaVA fork, e.g. `feipengma/VLoRA-7b-v1`) → ours.

    vlora convert-release SRC DST        # SRC: a local folder with the release's files, or a hub id

The release stores a LLaVA-style `LlavaLlamaVLoRAForCausalLM`: the Llama weights under the usual
names, and the generator as `model.mm_projector.*` in its own layout:

| release (`LoRAGenerater`, `weights_sep=True`)        | ours (`PerceptualWeightsGenerator`)   |
|---|---|
| `visual_proj`, `pos_embed` [1, L, h_p], shared      | `input.input_proj`, `input.position_embedding` [L, h_p] |
| `gen.{i}` for the i-th letter of `vlora_type`        | `decoders.{letter}`, `heads.{letter}` |
| `gen.{i}.queries` [1, k, h_p]                        | `decoders.t.queries` [k, h_p]         |
| `decoders.{j}.self_attn` / `multihead_attn`: `nn.MultiheadAttention`, packed `in_proj_weight` [3h_p, h_p] | `blocks.j.self_attn` / `cross_attn`: `q_proj`, `k_proj`, `v_proj` (rows 0:h_p, h_p:2h_p, 2h_p:) and `out_proj` |
| `norm1`, `norm2`, `norm3`, `linear1`, `linear2`      | `self_norm`, `cross_norm`, `ffn_norm`, `ffn.0`, `ffn.3` |
| `gen.{i}.norm`, `gen.{i}.weights_head`               | `decoders.t.final_norm`, `heads.t`    |
| `Bs` [1, T·k, h·r], rows type-major, each row an h×r `B` applied as `(x·A)·Bᵀ` | `w_s.t` [k, r, h] = `B`ᵀ per block |

Both scale B by α/r (`vlora_alpha / vlora_rank`) and insert into blocks (i+1) % `skip_layers` == 0,
and both read the "m" delta as a parallel h→h branch around the MLP. The release removes the
image placeholder by masking it; we drop it: the same attention over the text tokens (RoPE is
relative). Its vision tower is transformers' CLIP ViT-L/14-336 at the penultimate layer, CLS
dropped: the `vicuna7b-clip336-hf` preset's. Only `weights_sep=True` has an equivalent here (the
released model's setting; `False` shares one head across all types).

A checkpoint holding only `model.mm_projector.*` (the release's pre-training output,
`mm_projector.bin`) converts to a generator on top of a referenced base LLM (`--base-llm`).
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from vlora.config import (
    ALL_TARGETS,
    DType,
    GeneratorConfig,
    LLMConfig,
    ModelConfig,
    VisionEncoderConfig,
)
from vlora.utils.atomic import atomic_directory

logger = logging.getLogger(__name__)

PROJECTOR_PREFIX = "model.mm_projector."
VISION_TOWER_PREFIX = "model.vision_tower."
# what the LLaVA config adds to a Llama config; dropped from the converted LLM's config
_LLAVA_FIELDS_PREFIXES = ("mm_", "vlora_", "tune_", "freeze_", "image_", "use_mm_", "tokenizer_")
_LLAVA_FIELDS = {"weights_sep", "skip_layers", "architectures", "model_type", "auto_map"}
_TOKENIZER_FILES = (
    "tokenizer.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
)
# the LLM fields kept in the model config (weight-free builds, the FLOPs model, config checks)
_ARCH = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "vocab_size",
    "max_position_embeddings",
    "rms_norm_eps",
    "tie_word_embeddings",
)
_BLOCK_NAMES = {"norm1": "self_norm", "norm2": "cross_norm", "norm3": "ffn_norm"}
_FFN_NAMES = {"linear1": "ffn.0", "linear2": "ffn.3"}
_ATTN_NAMES = {"self_attn": "self_attn", "multihead_attn": "cross_attn"}


@dataclass
class ConversionReport:
    source: str
    destination: str
    generator_tensors: int
    llm_tensors: int
    llm_weights: str  # "embedded" (converted from the release) or "referenced" (--base-llm)
    skipped: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def release_generator_config(release: dict[str, Any]) -> GeneratorConfig:
    """Our generator config for a release config.json (its `vlora_*` fields)."""
    missing = [
        k for k in ("vlora_dim", "vlora_depth", "vlora_rank", "vlora_type") if k not in release
    ]
    if missing:
        raise ValueError(f"not a VLoRA release config: no {', '.join(missing)}")
    if not release.get("weights_sep", True):
        raise ValueError(
            "weights_sep=false: the release's single generator shares one head across all weight "
            "types, a layout with no equivalent here (the released model uses weights_sep=true)"
        )
    targets = list(release["vlora_type"])
    unknown = [t for t in targets if t not in ALL_TARGETS]
    if unknown or len(set(targets)) != len(targets):
        raise ValueError(f"vlora_type '{release['vlora_type']}': letters must be distinct qkvom")
    if release.get("vlora_llm_dim", release.get("hidden_size")) != release.get("hidden_size"):
        raise ValueError("vlora_llm_dim differs from hidden_size: not a square-delta release")
    return GeneratorConfig(
        hidden_size=release["vlora_dim"],
        num_blocks=release["vlora_depth"],
        num_heads=16,  # LoRAGenerater's default; its builder never passes another
        ffn_mult=4,
        rank=release["vlora_rank"],
        alpha=release.get("vlora_alpha") or release["vlora_rank"],
        targets=targets,
        insert_every=release.get("skip_layers", 1),
        shared_input=True,
        mlp_mode="parallel",
    )


def convert_generator_state(
    projector: dict[str, torch.Tensor], release: dict[str, Any]
) -> dict[str, torch.Tensor]:
    """`model.mm_projector.*` tensors (prefix removed) → our generator's state dict."""
    letters = list(release["vlora_type"])
    rank, hidden = release["vlora_rank"], release["hidden_size"]
    out: dict[str, torch.Tensor] = {
        "input.input_proj.weight": projector["visual_proj.weight"],
        "input.input_proj.bias": projector["visual_proj.bias"],
        "input.position_embedding": projector["pos_embed"][0],  # [1, L, h_p] → [L, h_p]
    }
    for i, letter in enumerate(letters):
        prefix, ours = f"gen.{i}.", f"decoders.{letter}."
        for key, value in projector.items():
            if not key.startswith(prefix):
                continue
            rest = key[len(prefix) :]
            if rest == "queries":
                out[ours + "queries"] = value[0]  # [1, k, h_p] → [k, h_p]
            elif rest.startswith("norm."):
                out[ours + "final_norm." + rest[len("norm.") :]] = value
            elif rest.startswith("weights_head."):
                out[f"heads.{letter}." + rest[len("weights_head.") :]] = value
            elif rest.startswith("decoders."):
                out.update(_block_tensors(ours, rest[len("decoders.") :], value))
            else:
                raise ValueError(f"unexpected release generator tensor '{key}'")
    k = projector["Bs"].shape[1] // len(letters)
    b = projector["Bs"].reshape(len(letters), k, hidden, rank)  # [T, k, h, r], type-major
    for i, letter in enumerate(letters):
        out[f"w_s.{letter}"] = b[i].transpose(1, 2).contiguous()  # [k, r, h]: W_s = Bᵀ
    return out


def _block_tensors(ours: str, rest: str, value: torch.Tensor) -> dict[str, torch.Tensor]:
    """One tensor of release decoder block `rest` = '{j}.{module}.{param}' → ours (1 or 3)."""
    index, module, param = rest.split(".", 2)
    block = f"{ours}blocks.{index}."
    if module in _BLOCK_NAMES:
        return {f"{block}{_BLOCK_NAMES[module]}.{param}": value}
    if module in _FFN_NAMES:
        return {f"{block}{_FFN_NAMES[module]}.{param}": value}
    if module in _ATTN_NAMES:
        attn = f"{block}{_ATTN_NAMES[module]}."
        if param in ("in_proj_weight", "in_proj_bias"):
            kind = param.removeprefix("in_proj_")
            q, k, v = value.chunk(3, dim=0)  # packed [3·h_p, …] rows: query, key, value
            return {
                f"{attn}{p}_proj.{kind}": t.contiguous()
                for p, t in zip("qkv", (q, k, v), strict=True)
            }
        return {attn + param: value}  # out_proj.weight / out_proj.bias
    raise ValueError(f"unexpected release decoder tensor '{rest}'")


def read_release_weights(folder: Path, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Every tensor of the release folder: `*.safetensors`, or `*.bin` with `allow_pickle`."""
    files = sorted(folder.glob("*.safetensors"))
    if files:
        tensors: dict[str, torch.Tensor] = {}
        for path in files:
            tensors.update(load_file(path))
        return tensors
    pickles = sorted(folder.glob("*.bin"))
    if not pickles:
        raise FileNotFoundError(f"{folder}: no *.safetensors or *.bin weight files")
    if not allow_pickle:
        raise ValueError(
            f"{folder} holds pickled weights ({pickles[0].name}); this project never unpickles "
            "by default: pass --allow-pickle to read them with torch.load(weights_only=True), "
            "which refuses anything but tensors"
        )
    tensors = {}
    for path in pickles:
        tensors.update(torch.load(path, map_location="cpu", weights_only=True))
    return tensors


def resolve_release_source(source: str) -> Path:
    """A local folder as it is; a hub id downloaded (needs HF_HUB_OFFLINE=0)."""
    path = Path(source)
    if path.is_dir():
        return path
    if path.exists() or source.startswith((".", "/")) or source.count("/") != 1:
        raise FileNotFoundError(f"release source '{source}' is neither a folder nor a hub id")
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(source))


def release_model_config(
    release: dict[str, Any],
    base_llm: str | None,
    vision: VisionEncoderConfig | None = None,
    dtype: DType = "bfloat16",
) -> ModelConfig:
    """The converted model: the paper's transformers-CLIP preset (or `vision`) with the
    release's generator and LLM."""
    from vlora.presets import get_preset

    model = get_preset("vicuna7b-clip336-hf").model.model_copy(deep=True)
    model.generator = release_generator_config(release)
    llm_arch = llama_config_fields(release)
    model.llm = LLMConfig(
        # an embedded LLM's source is set to the folder's llm/ when the checkpoint loads
        source=base_llm or "release",
        architecture={"model_type": "llama", **{k: llm_arch[k] for k in _ARCH if k in llm_arch}},
        dtype=dtype,
    )
    if vision is None:
        layer = release.get("mm_vision_select_layer", -2)
        vision = model.vision.model_copy(update={"feature_layer": layer})
    model.vision = vision
    for field_name, ours in (
        ("vlora_pos_num", vision.num_patches),
        ("vlora_visual_dim", vision.feature_dim),
    ):
        if release.get(field_name, ours) != ours:
            raise ValueError(
                f"{field_name} {release[field_name]}: the release's generator was built for "
                f"another vision tower than '{vision.name}' ({ours})"
            )
    return model


def llama_config_fields(release: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v
        for k, v in release.items()
        if k not in _LLAVA_FIELDS
        and not k.startswith(_LLAVA_FIELDS_PREFIXES)
        and not k.startswith("_")
        and not k.startswith("transformers_")
    }


def convert_release(
    source: str,
    destination: str | Path,
    *,
    base_llm: str | None = None,
    allow_pickle: bool = False,
    vision: VisionEncoderConfig | None = None,
    dtype: DType = "bfloat16",
) -> ConversionReport:
    """Write the release checkpoint at `source` as our checkpoint folder `destination`
    (atomically), loadable with `VLoRAModel.from_pretrained`."""
    from transformers import LlamaConfig

    from vlora.checkpoint import BRIDGE_FILE, FORMAT, write_manifest

    folder = resolve_release_source(source)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{folder}: no config.json (not a release checkpoint folder)")
    release = json.loads(config_path.read_text())
    release_generator_config(release)  # an unsupported layout fails before reading GBs
    tensors = read_release_weights(folder, allow_pickle)
    projector = {
        k[len(PROJECTOR_PREFIX) :]: v for k, v in tensors.items() if k.startswith(PROJECTOR_PREFIX)
    }
    if not projector:
        raise ValueError(f"{folder}: no '{PROJECTOR_PREFIX}*' tensors: not a VLoRA checkpoint")
    llm = {
        k: v
        for k, v in tensors.items()
        if not k.startswith((PROJECTOR_PREFIX, VISION_TOWER_PREFIX))
    }
    skipped = {"vision_tower": sum(k.startswith(VISION_TOWER_PREFIX) for k in tensors)}
    if not llm and base_llm is None:
        raise ValueError(
            f"{folder} holds only the generator (a pre-training checkpoint): name the LLM it was "
            "trained on with base_llm / --base-llm (the release: lmsys/vicuna-7b-v1.5)"
        )
    model_config = release_model_config(release, None if llm else base_llm, vision, dtype)
    generator = convert_generator_state(projector, release)
    with atomic_directory(destination) as tmp:
        bridge = {f"generator.{k}": v.contiguous() for k, v in generator.items()}
        save_file(bridge, tmp / BRIDGE_FILE, metadata={"format": FORMAT})
        tokenizer = tmp / "tokenizer"
        tokenizer.mkdir()
        copied = [n for n in _TOKENIZER_FILES if (folder / n).is_file()]
        if not copied:
            raise FileNotFoundError(f"{folder}: no tokenizer files ({', '.join(_TOKENIZER_FILES)})")
        for name in copied:
            shutil.copy2(folder / name, tokenizer / name)
        if llm:
            (tmp / "llm").mkdir()
            fields = {**llama_config_fields(release), "architectures": ["LlamaForCausalLM"]}
            LlamaConfig(**fields).save_pretrained(tmp / "llm")
            save_file(
                {k: v.contiguous() for k, v in llm.items()},
                tmp / "llm" / "model.safetensors",
                metadata={"format": "pt"},
            )
        write_manifest(tmp, "vlora", model_config, bool(llm), vision_embedded=False)
    report = ConversionReport(
        source=str(folder),
        destination=str(destination),
        generator_tensors=len(generator),
        llm_tensors=len(llm),
        llm_weights="embedded" if llm else "referenced",
        skipped={k: v for k, v in skipped.items() if v},
    )
    logger.info("converted %s", report.to_dict())
    return report
