"""`vlora convert-release`: a checkpoint in the authors' release layout becomes ours, and the
converted model computes what the release's own formulas compute on the same weights.

The release folder is built here in exactly the key names and shapes of the release's code
(`LoRAGenerater` in their `weights_generater.py`, saved under `model.mm_projector.`, beside a
LLaVA-style Llama); the reference forward below is written from that code: packed
`nn.MultiheadAttention`, one shared input projection, per-type query decoders, `Bs` rows in
type-major order, and `y += (x·A)·Bᵀ` at q, k, v, o and around the MLP of every `skip_layers`-th
block.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

from vlora.cli import main as vlora_main
from vlora.config import VisionEncoderConfig
from vlora.model import VLoRAModel
from vlora.release import convert_release
from vlora.tokenizer import build_byte_tokenizer

H, LAYERS, HEADS, VOCAB = 64, 4, 4, 288
H_P, DEPTH, RANK, ALPHA, SKIP = 32, 2, 4, 8, 2
D_V, L = 32, 16
TYPES = "qkvom"
K = LAYERS // SKIP  # blocks 1 and 3 get deltas


def release_config() -> dict:
    return {
        "model_type": "llava_vlora",
        "architectures": ["LlavaLlamaVLoRAForCausalLM"],
        "hidden_size": H,
        "intermediate_size": 128,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": HEADS,
        "vocab_size": VOCAB,
        "max_position_embeddings": 512,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "mm_vision_tower": "openai/clip-vit-large-patch14-336",
        "mm_vision_select_layer": -2,
        "mm_projector_type": "vlora",
        "mm_use_im_start_end": False,
        "image_aspect_ratio": "pad",
        "tune_mm_mlp_adapter": False,
        "use_mm_proj": True,
        "vlora_dim": H_P,
        "vlora_depth": DEPTH,
        "vlora_visual_dim": D_V,
        "vlora_pos_num": L,
        "vlora_llm_dim": H,
        "vlora_llm_depth": LAYERS,
        "vlora_rank": RANK,
        "vlora_alpha": ALPHA,
        "vlora_type": TYPES,
        "weights_sep": True,
        "skip_layers": SKIP,
    }


def llama_config() -> LlamaConfig:
    """The Llama part of the release config (what LLaVA adds dropped)."""
    llava_only = ("mm_", "vlora_", "tune_", "image_", "use_mm_")
    fields = {
        k: v
        for k, v in release_config().items()
        if not k.startswith(llava_only)
        and k not in ("model_type", "architectures", "weights_sep", "skip_layers")
    }
    return LlamaConfig(**fields)


def release_projector(seed: int = 0) -> dict[str, torch.Tensor]:
    """`model.mm_projector.*` with the release's names and shapes, random values (non-zero Bs)."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape: int, std: float = 0.2) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * std

    p = {
        "visual_proj.weight": rand(H_P, D_V),
        "visual_proj.bias": rand(H_P),
        "pos_embed": rand(1, L, H_P, std=1.0),
        "Bs": rand(1, len(TYPES) * K, H * RANK),
    }
    for i in range(len(TYPES)):
        p[f"gen.{i}.queries"] = rand(1, K, H_P, std=1.0)
        for j in range(DEPTH):
            pre = f"gen.{i}.decoders.{j}."
            for attn in ("self_attn", "multihead_attn"):
                p[pre + f"{attn}.in_proj_weight"] = rand(3 * H_P, H_P)
                p[pre + f"{attn}.in_proj_bias"] = rand(3 * H_P)
                p[pre + f"{attn}.out_proj.weight"] = rand(H_P, H_P)
                p[pre + f"{attn}.out_proj.bias"] = rand(H_P)
            p[pre + "linear1.weight"], p[pre + "linear1.bias"] = rand(4 * H_P, H_P), rand(4 * H_P)
            p[pre + "linear2.weight"], p[pre + "linear2.bias"] = rand(H_P, 4 * H_P), rand(H_P)
            for norm in ("norm1", "norm2", "norm3"):
                p[pre + f"{norm}.weight"] = 1 + rand(H_P, std=0.1)
                p[pre + f"{norm}.bias"] = rand(H_P, std=0.1)
        p[f"gen.{i}.norm.weight"], p[f"gen.{i}.norm.bias"] = 1 + rand(H_P, std=0.1), rand(H_P)
        p[f"gen.{i}.weights_head.weight"] = rand(H * RANK, H_P)
        p[f"gen.{i}.weights_head.bias"] = rand(H * RANK)
    return p


@pytest.fixture(scope="module")
def release_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("release")
    (folder / "config.json").write_text(json.dumps(release_config()))
    torch.manual_seed(1)
    llm = LlamaForCausalLM(llama_config())
    tensors = {k: v.contiguous() for k, v in llm.state_dict().items()}
    tensors |= {f"model.mm_projector.{k}": v for k, v in release_projector().items()}
    tensors["model.vision_tower.vision_tower.vision_model.post_layernorm.weight"] = torch.ones(8)
    half = len(tensors) // 2  # two shards, as the hub's index-sharded checkpoints come
    items = sorted(tensors.items())
    save_file(dict(items[:half]), folder / "model-00001-of-00002.safetensors")
    save_file(dict(items[half:]), folder / "model-00002-of-00002.safetensors")
    build_byte_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_tower(tmp_path_factory) -> VisionEncoderConfig:
    folder = tmp_path_factory.mktemp("tower")
    arch = {"hidden_size": D_V, "intermediate_size": 64, "num_hidden_layers": 2}
    arch |= {"num_attention_heads": 2, "image_size": 32, "patch_size": 8}
    CLIPVisionModel(CLIPVisionConfig(**arch)).save_pretrained(folder)
    return VisionEncoderConfig(
        backend="hf", name=str(folder), image_size=32, patch_size=8, feature_dim=D_V
    )


# ----- the release's forward, from its code -----------------------------------------------------
def _mha(p: dict, prefix: str) -> nn.MultiheadAttention:
    attn = nn.MultiheadAttention(H_P, 16, batch_first=True)  # LoRAGenerater's num_heads
    attn.load_state_dict({k[len(prefix) :]: v for k, v in p.items() if k.startswith(prefix)})
    return attn.eval()


def _ln(x: torch.Tensor, p: dict, prefix: str) -> torch.Tensor:
    return F.layer_norm(x, (H_P,), p[prefix + ".weight"], p[prefix + ".bias"])


@torch.no_grad()
def release_lora_weights(p: dict, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(A [B, T, k, h, r], B scaled [1, T, k, h, r]) as `LoRAGenerater.forward` computes them."""
    visual = F.linear(features, p["visual_proj.weight"], p["visual_proj.bias"]) + p["pos_embed"]
    weights = []
    for i in range(len(TYPES)):
        query = p[f"gen.{i}.queries"].expand(features.shape[0], -1, -1)
        for j in range(DEPTH):
            pre = f"gen.{i}.decoders.{j}."
            q2 = _ln(query, p, pre + "norm1")
            query = query + _mha(p, pre + "self_attn.")(q2, q2, q2, need_weights=False)[0]
            q2 = _ln(query, p, pre + "norm2")
            query = (
                query + _mha(p, pre + "multihead_attn.")(q2, visual, visual, need_weights=False)[0]
            )
            q2 = _ln(query, p, pre + "norm3")
            hidden = F.gelu(F.linear(q2, p[pre + "linear1.weight"], p[pre + "linear1.bias"]))
            query = query + F.linear(hidden, p[pre + "linear2.weight"], p[pre + "linear2.bias"])
        head = p[f"gen.{i}.weights_head.weight"], p[f"gen.{i}.weights_head.bias"]
        weights.append(F.linear(_ln(query, p, f"gen.{i}.norm"), *head))
    a = torch.cat(weights, dim=1).reshape(features.shape[0], len(TYPES), K, H, RANK)
    b = p["Bs"].reshape(1, len(TYPES), K, H, RANK) * (ALPHA / RANK)
    return a, b


def apply_vlora(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # the release: x·A then ·Bᵀ, A [B, h, r], B [1, h, r]
    return torch.einsum("blr,brd->bld", torch.einsum("bld,bdr->blr", x, a), b.transpose(1, 2))


@torch.no_grad()
def release_logits(folder: Path, input_ids: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """The release's LLM forward: a plain Llama with (x·A)·Bᵀ added at every inserted block."""
    from safetensors.torch import load_file

    tensors = {}
    for path in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(path))
    llm = LlamaForCausalLM(llama_config())
    llm.load_state_dict(
        {k: v for k, v in tensors.items() if not k.startswith(("model.mm_", "model.vision_tower."))}
    )
    llm.eval()
    projector = {
        k[len("model.mm_projector.") :]: v for k, v in tensors.items() if "mm_projector" in k
    }
    a, b = release_lora_weights(projector, features)
    hooks = []
    for depth, block in enumerate(llm.model.layers):
        if (depth + 1) % SKIP:
            continue
        index = depth // SKIP
        targets = {
            "q": block.self_attn.q_proj,
            "k": block.self_attn.k_proj,
            "v": block.self_attn.v_proj,
            "o": block.self_attn.o_proj,
            "m": block.mlp,
        }
        for t, module in targets.items():
            i = TYPES.index(t)

            def hook(mod, inputs, output, i=i, index=index):
                return output + apply_vlora(inputs[0], a[:, i, index], b[:, i, index])

            hooks.append(module.register_forward_hook(hook))
    try:
        return llm(input_ids=input_ids).logits
    finally:
        for h in hooks:
            h.remove()


# ----- the tests -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def converted(release_folder: Path, tiny_tower, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("converted") / "vlora-release"
    report = convert_release(str(release_folder), out, vision=tiny_tower, dtype="float32")
    assert report.llm_weights == "embedded" and report.skipped == {"vision_tower": 1}
    return out


def test_converted_generator_gives_the_release_deltas(release_folder, converted) -> None:
    model = VLoRAModel.from_pretrained(converted).eval()
    assert model.config.generator.insert_every == SKIP and model.plan.blocks == [1, 3]
    features = torch.randn(3, L, D_V)
    a, b = release_lora_weights(release_projector(), features)
    with torch.no_grad():
        ours = model.generator(features)
    for i, t in enumerate(TYPES):
        torch.testing.assert_close(ours[t], a[:, i], rtol=1e-4, atol=1e-5)  # W_v = A
        w_s = model.generator.w_s[t] * model.config.generator.scale  # [k, r, h]
        torch.testing.assert_close(w_s, b[0, i].transpose(1, 2), rtol=1e-6, atol=1e-7)


def test_converted_model_logits_equal_the_release_forward(release_folder, converted) -> None:
    model = VLoRAModel.from_pretrained(converted).eval()
    features = torch.randn(2, L, D_V)
    ids = torch.randint(4, 250, (2, 9))
    with torch.no_grad():
        ours = model(input_ids=ids, image_features=features).logits
    expected = release_logits(release_folder, ids, features)
    assert (
        expected - release_logits(release_folder, ids, torch.zeros_like(features))
    ).abs().max() > 1e-3
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)


def test_generator_only_release_needs_a_base_llm(release_folder, tiny_tower, tmp_path) -> None:
    from safetensors.torch import load_file

    src = tmp_path / "pretrain"
    src.mkdir()
    (src / "config.json").write_text((release_folder / "config.json").read_text())
    tensors = {}
    for path in release_folder.glob("*.safetensors"):
        tensors.update(load_file(path))
    save_file(
        {k: v for k, v in tensors.items() if "mm_projector" in k}, src / "mm_projector.safetensors"
    )
    build_byte_tokenizer().save_pretrained(src)
    with pytest.raises(ValueError, match="--base-llm"):
        convert_release(str(src), tmp_path / "out", vision=tiny_tower)
    llm_dir = tmp_path / "base"
    LlamaForCausalLM(llama_config()).save_pretrained(llm_dir)
    report = convert_release(str(src), tmp_path / "out", vision=tiny_tower, base_llm=str(llm_dir))
    assert report.llm_weights == "referenced"
    model = VLoRAModel.from_pretrained(tmp_path / "out")
    assert model.config.llm.source == str(llm_dir)


def test_bad_release_folders_are_named(release_folder, tiny_tower, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="neither a folder nor a hub id"):
        convert_release(str(tmp_path / "missing" / "x" / "y"), tmp_path / "o")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "config.json").write_text(json.dumps(release_config()))
    torch.save({"model.mm_projector.Bs": torch.zeros(1)}, tmp_path / "bin" / "pytorch_model.bin")
    with pytest.raises(ValueError, match="--allow-pickle"):
        convert_release(str(tmp_path / "bin"), tmp_path / "o")
    shared = {**release_config(), "weights_sep": False}
    (tmp_path / "bin" / "config.json").write_text(json.dumps(shared))
    with pytest.raises(ValueError, match="weights_sep=false"):
        convert_release(str(tmp_path / "bin"), tmp_path / "o", allow_pickle=True)
    assert not (tmp_path / "o").exists()


def test_cli_help_and_conversion(release_folder, tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        vlora_main(["convert-release", "--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    assert "SRC" in help_text and "DST" in help_text and "--allow-pickle" in help_text
    assert (
        vlora_main(["convert-release", str(tmp_path / "nope" / "a" / "b"), str(tmp_path / "o")])
        == 2
    )
    assert "neither a folder nor a hub id" in capsys.readouterr().err
