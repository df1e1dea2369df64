"""Pipeline configuration: one strict pydantic model per stage, aggregated by PipelineConfig.

Each stage module's config lives in its own file here; field descriptions are the help text.
"""

from pipelines.config.pipeline import PipelineConfig, load_pipeline_config

__all__ = ["PipelineConfig", "load_pipeline_config"]
