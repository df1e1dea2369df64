"""Data sources of the download stage: readers, converters and the img2dataset runner.

- `capsfusion`: CapsFusion-style Parquet (local or fsspec) → seeded subset → bounded input chunks.
- `easyvqa`, `skimage_photos`: local, offline sources served as URL lists over `loopback`.
- `llava_pretrain`: LLaVA-Pretrain JSON + image folder → the same webdataset shard layout.
- `sft`: LLaVA-format SFT conversations (user-given, or generated from easy-vqa's train split).
- `img2dataset_runner`, `strict_resizer`, `shard_stats`: running img2dataset and accounting for
  every sample it wrote or failed.

Modules import their heavy dependencies lazily, so importing this package is cheap.
"""
