"""Config of the download stage (source preparation + img2dataset + SFT data). Owner: data stages.

Two sources per run, each a discriminated union on `kind`:
- `pretrain`: image-text pairs for pre-training: `capsfusion` (CapsFusion-style Parquet of URLs,
  local or any fsspec URL), `easyvqa` / `skimage` (local images served over a loopback HTTP
  server, the offline default), or `llava_pretrain` (LLaVA-Pretrain JSON + image folder).
- `sft`: LLaVA-format conversations: `llava` (a llava_v1_5_mix665k.json-style file + image
  folder), `easyvqa` (generated from easy-vqa's train split), or `none`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from pipelines.config.base import StageConfig

CAPSFUSION_CAPTION_COLUMNS = ("laion_2b", "laion_coco", "capsfusion")
CaptionColumn = Literal["laion_2b", "laion_coco", "capsfusion"]
# img2dataset writes these itself (source_index is ours: the row's position in the source);
# a caption column with one of these names would be clobbered.
IMG2DATASET_RESERVED = frozenset(
    {
        "key",
        "caption",
        "url",
        "width",
        "height",
        "original_width",
        "original_height",
        "status",
        "error_message",
        "exif",
        "md5",
        "sha256",
        "sha512",
        "source_index",
    }
)
# Workers and thresholds: they change how fast the stage runs or whether it passes, never what
# it writes, so they stay out of the content hash (a rerun with more threads reuses the output).
NOT_IN_KEY = frozenset({"processes", "threads", "distributor", "max_failed_fraction"})
# SFT fields added after stages had been run with what is now their default: left out of the
# key at that default, so finished downloads are still found; set otherwise, they change it.
SFT_KEY_OMIT_AT_DEFAULT = {"yes_no_order": "answer_first"}


class CapsFusionSource(StageConfig):
    kind: Literal["capsfusion"] = "capsfusion"
    url_list: str = Field(
        description="CapsFusion-style Parquet: one file, a folder of *.parquet files or a glob; a "
        "local path or any fsspec URL (s3://, gs://, https://, file://, memory://)."
    )
    url_column: str = Field(default="image_url", description="Column holding the image URL.")
    caption_columns: list[str] = Field(
        default_factory=lambda: list(CAPSFUSION_CAPTION_COLUMNS),
        min_length=1,
        description="Caption columns to keep: all are stored in each sample's JSON metadata.",
    )
    caption_column: str = Field(
        default="capsfusion",
        description="The caption written as each sample's .txt (one of caption_columns).",
    )

    @field_validator("caption_columns")
    @classmethod
    def _usable_columns(cls, columns: list[str]) -> list[str]:
        if len(set(columns)) != len(columns):
            raise ValueError(f"duplicate column names in {columns}")
        reserved = sorted(set(columns) & IMG2DATASET_RESERVED)
        if reserved:
            raise ValueError(f"{reserved} are reserved by img2dataset; rename those columns")
        return columns

    @model_validator(mode="after")
    def _caption_is_kept(self) -> CapsFusionSource:
        if self.caption_column not in self.caption_columns:
            raise ValueError(
                f"caption_column: '{self.caption_column}' is not one of caption_columns "
                f"{self.caption_columns}"
            )
        if self.url_column in self.caption_columns:
            raise ValueError(f"url_column: '{self.url_column}' is also a caption column")
        return self


class EasyVQASource(StageConfig):
    kind: Literal["easyvqa"] = "easyvqa"
    caption_column: CaptionColumn = Field(
        default="capsfusion",
        description="Which derived caption becomes the .txt: capsfusion ('a blue rectangle.'), "
        "laion_2b ('blue rectangle'), laion_coco ('a rectangle in blue on a light background').",
    )


class SkimagePhotosSource(StageConfig):
    kind: Literal["skimage"] = "skimage"
    caption_column: CaptionColumn = Field(
        default="capsfusion",
        description="capsfusion/laion_coco: the photo's one-line description; laion_2b: its name.",
    )


class LlavaPretrainSource(StageConfig):
    kind: Literal["llava_pretrain"] = "llava_pretrain"
    json_path: str = Field(
        description="LLaVA-Pretrain JSON (blip_laion_cc_sbu_558k.json format), local or fsspec URL."
    )
    image_folder: str = Field(
        description="Folder the records' 'image' paths are relative to (local or fsspec URL)."
    )


PretrainSource = Annotated[
    CapsFusionSource | EasyVQASource | SkimagePhotosSource | LlavaPretrainSource,
    Field(discriminator="kind"),
]


class NoSft(StageConfig):
    kind: Literal["none"] = "none"


class LlavaSft(StageConfig):
    kind: Literal["llava"] = "llava"
    json_path: str = Field(
        description="llava_v1_5_mix665k.json-format conversations (local or fsspec URL); copied "
        "into the stage output so the run is pinned to the data it saw."
    )
    image_folder: str | None = Field(
        default=None,
        description="Folder the records' 'image' paths are relative to; None only when every "
        "record is text-only.",
    )
    copy_images: bool = Field(
        default=False,
        description="Copy the referenced images into the stage output (else they are read from "
        "image_folder in place).",
    )
    max_records: int | None = Field(
        default=None, gt=0, description="Seeded subset of this many records (None = all)."
    )
    check_images: bool = Field(
        default=True, description="Count records whose image file does not exist."
    )


class EasyVQASft(StageConfig):
    kind: Literal["easyvqa"] = "easyvqa"
    images: int = Field(
        default=1000, gt=0, le=4000, description="Train-split images to build conversations for."
    )
    turns_per_image: int = Field(
        default=4, gt=0, le=12, description="Question/answer turns per image record (at most)."
    )
    single_word_fraction: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="Share of turns asked LLaVA-style for 'a single word or phrase'; the others "
        "are answered with a short sentence.",
    )
    text_only_records: int = Field(
        default=50,
        ge=0,
        description="Records without an image (questions about shapes and colours that need "
        "none), so the text-only path (ΔW = 0) is exercised.",
    )
    yes_no: Literal["balanced", "as_asked"] = Field(
        default="balanced",
        description="easy-vqa's own yes/no questions name a random colour or shape, so 'is there "
        "a red shape?' is false 7 times in 8 and a model can answer from the phrasing alone "
        "(positive: 'no', negated: 'yes'), never looking at the image. 'balanced' keeps each "
        "question's phrasing and names the image's true colour or shape in half of them; "
        "'as_asked' keeps easy-vqa's questions.",
    )
    yes_no_order: Literal["answer_first", "describe_first"] = Field(
        default="answer_first",
        description="Sentence answers to yes/no questions: 'answer_first' ('No. The image shows a "
        "red circle.') or 'describe_first' ('The image shows a red circle, so no.'): the "
        "answer follows the description the model has just generated.",
    )


SftSource = Annotated[NoSft | LlavaSft | EasyVQASft, Field(discriminator="kind")]


class DownloadConfig(StageConfig):
    pretrain: PretrainSource = Field(
        default_factory=EasyVQASource, description="Where pre-training image-text pairs come from."
    )
    sft: SftSource = Field(
        default_factory=EasyVQASft, description="Where SFT conversations come from."
    )
    samples: int | None = Field(
        default=None,
        gt=0,
        description="Seeded subset size N of the pre-training source (None = every row).",
    )
    seed: int = Field(default=0, description="Seed of the subsets (same seed → same rows).")
    input_chunk_rows: int = Field(
        default=100_000,
        gt=0,
        description="Rows per img2dataset input file (img2dataset loads a whole input file into "
        "memory); a multiple of number_sample_per_shard.",
    )
    image_size: int = Field(default=336, gt=0, description="Shard image size in pixels.")
    resize_mode: Literal["no", "border", "keep_ratio", "keep_ratio_largest", "center_crop"] = Field(
        default="keep_ratio_largest",
        description="img2dataset resize mode. keep_ratio_largest (longest side = image_size, no "
        "padding) lets the features stage pad to square with the mean colour, as LLaVA does; "
        "'border' would bake in white padding.",
    )
    resize_only_if_bigger: bool = Field(default=False, description="Never upscale small images.")
    encode_quality: int = Field(default=95, ge=1, le=100, description="JPEG quality of shards.")
    processes: int = Field(
        default=1,
        gt=0,
        description="img2dataset processes in the driver (distributor multiprocessing; not in "
        "the key).",
    )
    threads: int = Field(
        default=16,
        gt=0,
        description="Download threads per process, or per Ray task (not in the key).",
    )
    distributor: Literal["multiprocessing", "ray"] = Field(
        default="multiprocessing",
        description="Where img2dataset downloads. multiprocessing: `processes` processes on the "
        "driver's machine. ray: one Ray task (1 CPU, `threads` threads) per shard across the "
        "cluster of `ray.address` / RAY_ADDRESS (a private local one without), so the download "
        "scales with the cluster; the shards folder (the workdir) must then be reachable from "
        "every node (s3://…, a shared filesystem). Not in the key: both write the same shards.",
    )
    timeout: int = Field(default=10, gt=0, description="Per-request timeout in seconds.")
    retries: int = Field(default=0, ge=0, description="Extra attempts per failed URL.")
    number_sample_per_shard: int = Field(
        default=10_000, gt=0, description="Samples per webdataset shard."
    )
    max_failed_fraction: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="Fail the stage (listing reasons) when more than this share of pre-training "
        "samples failed. Not in the key: raising it and rerunning reuses the finished shards.",
    )

    @model_validator(mode="after")
    def _chunks_hold_whole_shards(self) -> DownloadConfig:
        if self.input_chunk_rows % self.number_sample_per_shard:
            raise ValueError(
                f"input_chunk_rows: {self.input_chunk_rows} must be a multiple of "
                f"number_sample_per_shard ({self.number_sample_per_shard}), or every chunk "
                "would end in a partial shard"
            )
        return self

    def key_config(self) -> dict:
        """What the stage's output depends on (worker counts and thresholds left out)."""
        fields = self.model_dump(mode="json", exclude=set(NOT_IN_KEY))
        sft = fields["sft"]
        for name, default in SFT_KEY_OMIT_AT_DEFAULT.items():
            if sft.get(name, default) == default:
                sft.pop(name, None)
        return fields
