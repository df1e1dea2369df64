"""`ServeSettings`: everything about a served model, typed once; field descriptions are the help.

The same object configures `python -m pipelines serve` (flags and `--set a.b=v` map onto it),
the application builder for `serve run` / `serve deploy` (its `args`), and the Ray Serve
deployments it creates. Resources, replicas and autoscaling are per deployment:

- `encoder`: vision encoder + generator (images → W_v factors) or projector (baseline), batched;
- `llm`: the generation engine (iteration-level batching, per-request deltas);
- `ingress`: the OpenAI-compatible HTTP API (parsing, validation, streaming).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from vlora.serving.engine_config import EngineConfig

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSettings(Section):
    model: str = Field(
        description="What to serve: a checkpoint folder, a preset name (random init; "
        "`vlora presets`), or a registry URI models:/NAME@ALIAS or models:/NAME/VERSION."
    )
    design: Literal["vlora", "input_space"] | None = Field(
        default=None,
        description="For a preset: which design to build (default vlora). For a checkpoint: "
        "checked against the design it holds.",
    )
    tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking/registry URI for models:/ (e.g. sqlite:///runs/local/mlflow.db).",
    )
    served_model_name: str | None = Field(
        default=None,
        description="The id clients pass as `model` (default: the registered name, the folder "
        "name or the preset name).",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="Where the model runs; auto = CUDA when available."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="auto = bfloat16 on CUDA, float32 on the CPU."
    )
    preset_seed: int = Field(
        default=0,
        description="Seed of a preset's random init: every replica builds the same weights.",
    )
    cache_dir: str | None = Field(
        default=None,
        description="Where verified registry downloads are kept per node (default "
        "$VLORA_CACHE_DIR/registry).",
    )


class APISettings(Section):
    api_key: str | None = Field(
        default=None,
        description="Bearer key every /v1 request must carry (401 otherwise). Prefer "
        "`api_key_env` outside tests: a key in a config file ends up in logs and manifests.",
    )
    api_key_env: str | None = Field(
        default=None, description="Name of an environment variable holding the bearer key."
    )
    default_max_tokens: int = Field(
        default=256, ge=1, description="max_tokens when a request gives none."
    )
    default_temperature: float = Field(
        default=1.0,
        ge=0,
        le=2,
        description="temperature when a request gives none (1.0, as OpenAI; 0 = greedy).",
    )
    max_tokens_limit: int = Field(
        default=2048, ge=1, description="Largest max_tokens a request may ask for."
    )
    max_request_bytes: int = Field(
        default=32 * 2**20, ge=1024, description="Largest request body accepted (413 above)."
    )
    max_image_bytes: int = Field(
        default=8 * 2**20, ge=1, description="Largest encoded image (data URL or download)."
    )
    max_image_pixels: int = Field(
        default=25_000_000, ge=1, description="Largest width × height (decompression bombs)."
    )
    allow_image_urls: bool = Field(
        default=False,
        description="Fetch http(s) image_url parts (off: only data: URLs are accepted).",
    )
    image_url_timeout_s: float = Field(
        default=10.0, gt=0, description="Time limit for fetching one image URL."
    )
    request_timeout_s: float = Field(
        default=600.0, gt=0, description="Longest a request may take end to end (504 after)."
    )
    retries_on_replica_failure: int = Field(
        default=1,
        ge=0,
        description="Times a request is resent when its generation replica dies before the "
        "first token (nothing was sent to the client yet, so a retry is invisible).",
    )


class DeploymentSettings(Section):
    num_replicas: int = Field(default=1, ge=1, description="Replicas (without autoscaling).")
    autoscaling: dict[str, Any] | None = Field(
        default=None,
        description="Ray Serve autoscaling_config (min_replicas, max_replicas, "
        "target_ongoing_requests, …); replaces num_replicas.",
    )
    num_cpus: float = Field(default=1.0, ge=0, description="Logical CPUs per replica.")
    num_gpus: float = Field(default=0.0, ge=0, description="GPUs per replica (fractions allowed).")
    max_ongoing_requests: int = Field(
        default=64, ge=1, description="Requests one replica takes at a time (Serve queues more)."
    )
    torch_threads: int | None = Field(
        default=None, ge=1, description="torch intra-op threads; None = ceil(num_cpus)."
    )

    def ray_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "ray_actor_options": {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus},
            "max_ongoing_requests": self.max_ongoing_requests,
        }
        if self.autoscaling:
            options["autoscaling_config"] = dict(self.autoscaling)
        else:
            options["num_replicas"] = self.num_replicas
        return options


class EncoderSettings(DeploymentSettings):
    max_batch_size: int = Field(default=8, ge=1, description="Images per encoder forward.")
    batch_wait_timeout_s: float = Field(
        default=0.005, ge=0, description="How long a batch waits for more images."
    )
    cache_mb: float = Field(
        default=512, ge=0, description="Conditioning cache of the encoder replicas (MB)."
    )


class LLMSettings(DeploymentSettings):
    num_cpus: float = Field(default=2.0, ge=0, description="Logical CPUs per replica.")
    max_ongoing_requests: int = Field(
        default=64, ge=1, description="Requests one replica takes at a time (Serve queues more)."
    )
    engine: EngineConfig = Field(default_factory=EngineConfig)
    cache_mb: float = Field(
        default=512,
        ge=0,
        description="Conditioning cache of each generation replica (MB), on its device: a hit "
        "skips the encoder deployment and the transfer.",
    )


class IngressSettings(DeploymentSettings):
    num_cpus: float = Field(default=0.25, ge=0, description="Logical CPUs per replica.")
    max_ongoing_requests: int = Field(
        default=256, ge=1, description="Requests one replica takes at a time (Serve queues more)."
    )


class HTTPSettings(Section):
    host: str = Field(
        default="127.0.0.1",
        description="Address the HTTP proxy listens on; anything but loopback needs an API key "
        "(or allow_unauthenticated).",
    )
    port: int = Field(default=8000, ge=1, le=65535, description="HTTP port.")
    allow_unauthenticated: bool = Field(
        default=False, description="Listen beyond loopback without an API key."
    )


class ServeSettings(Section):
    model: ModelSettings
    api: APISettings = Field(default_factory=APISettings)
    http: HTTPSettings = Field(default_factory=HTTPSettings)
    encoder: EncoderSettings = Field(default_factory=EncoderSettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    ingress: IngressSettings = Field(default_factory=IngressSettings)
    app_name: str = Field(default="vlora", description="Ray Serve application name.")
    route_prefix: str = Field(default="/", description="Where the application is mounted.")

    @model_validator(mode="after")
    def _check(self) -> ServeSettings:
        if self.api.default_max_tokens > self.api.max_tokens_limit:
            raise ValueError("api.default_max_tokens: above api.max_tokens_limit")
        public = self.http.host not in LOOPBACK_HOSTS
        if (
            public
            and not (self.api.api_key or self.api.api_key_env)
            and not (self.http.allow_unauthenticated)
        ):
            raise ValueError(
                f"http.host: {self.http.host} is reachable beyond this machine; set an API key "
                "(api.api_key / api.api_key_env) or http.allow_unauthenticated"
            )
        return self


def nested(flat: dict[str, Any]) -> dict[str, Any]:
    """{'llm.engine.max_batch_size': 4} → {'llm': {'engine': {'max_batch_size': 4}}}."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        parts = key.split(".")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"{key}: '{part}' is not a section")
        node[parts[-1]] = value
    return out


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def settings_from_args(args: dict[str, Any]) -> ServeSettings:
    """Builder arguments (`serve run module:build_app model=tiny-llama llm.num_replicas=2`, or a
    Serve config's `args`) → validated settings. Dotted keys are sections; a top-level `model`
    string is `model.model`."""
    data: dict[str, Any] = {}
    for key, value in args.items():
        if key == "model" and isinstance(value, str):
            key = "model.model"
        data = deep_merge(data, nested({key: value}))
    return ServeSettings.model_validate(data)
