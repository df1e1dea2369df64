"""lmms-eval model class for VLoRA: :class:`VLoRALmms`.

The interface it implements: docs/benchmark-scoring.md, "Toolkit adapters".

It subclasses ``lmms_eval.api.model.lmms`` when lmms-eval is importable; otherwise the base class is
``object`` (``LMMS_EVAL_AVAILABLE`` is False) so this module imports without the toolkit. It is a
"simple" model (``is_simple = True``) that behaves like lmms-eval's built-in ``llava`` for a
one-image model: the task's context (already holding the task prompt) gets one ``<image>`` + ``\\n``
in front unless it has a placeholder, then the ``vicuna_v1`` template; the first visual is used
(the one-image policy of ``vlora.eval.prompts``); output is cut at the task's ``until`` strings.
``loglikelihood`` and multi-round generation are not supported (the six benchmarks do not need them).

Run it programmatically::

    from lmms_eval.evaluator import simple_evaluate
    from vlora.eval.adapters.lmms_eval import VLoRALmms

    results = simple_evaluate(
        model=VLoRALmms(generate_fn=make_generate_fn("/ckpt")),  # vlora.eval.generate_fn
        tasks=["mmbench_en_dev", "mme", "scienceqa_img", "hallusion_bench_image", "mmmu_val",
               "mmbench_cn_cc"],
        batch_size=1,
    )

or from the command line: installing this package registers the model name ``vlora`` through the
entry-point group ``lmms_eval.models`` in ``pyproject.toml``, which points at
:func:`lmms_eval_manifest` (lmms-eval >= 0.7 wants a ``ModelManifest`` there, not the class);
:func:`register_with_lmms_eval` does the same from a launcher script::

    python -m lmms_eval --model vlora \\
        --model_args factory=vlora.eval.generate_fn:make_generate_fn,checkpoint=/ckpt \\
        --tasks mme,mmbench_en_dev,scienceqa_img,mmmu_val --batch_size 1 --output_path out/

The pinned lmms-eval (``requirements/no-deps.txt``) is run this way by the slow test
``tests/vlora/eval/test_lmms_eval_real.py``. With the locked filelock 4, building the adapter also
calls :func:`skip_filelock3_workaround` (see there).

Note: lmms-eval scores HallusionBench with a GPT-4 judge and MMBench with a GPT judge unless the
``*_static`` variants are used; score the same predictions with ``vlora score`` for judge-free
VLMEvalKit-style numbers.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from PIL import Image

from vlora.eval.adapters.common import (
    GenerateFn,
    PromptFormat,
    load_factory,
    load_image,
    render_prompt,
    resolve_generate_fn,
)
from vlora.eval.prompts import PromptWrapping

try:
    from lmms_eval.api.model import lmms as _LmmsBase

    LMMS_EVAL_AVAILABLE = True
except Exception:  # not installed, or its heavy imports fail: stay importable
    _LmmsBase = object  # type: ignore[assignment,misc]
    LMMS_EVAL_AVAILABLE = False


def skip_filelock3_workaround() -> bool:
    """Keep lmms-eval's filelock-3 patch from stopping a run on filelock 4; True if it was skipped.

    ``lmms_eval.evaluator.simple_evaluate`` (0.7.x) first calls ``_enable_reentrant_filelocks``,
    which imports ``filelock._api`` to wrap ``FileLockMeta.__call__`` (a cure for a deadlock between
    the lock caches of ``datasets`` and of filelock 3.16+). filelock 4, the version pinned in
    ``requirements/constraints.lock.txt``, has no ``filelock._api``, so every evaluation would stop
    with ``ModuleNotFoundError`` before the first request. Where that module is missing, this sets
    the patch's own ``_patched`` flag, so the run goes on with filelock 4's locks; elsewhere it
    changes nothing. :class:`VLoRALmms` calls it when built, which the CLI and ``simple_evaluate``
    do before the patch runs; it acts only once ``lmms_eval.evaluator`` is imported (building the
    adapter does not import the evaluator itself).
    """
    evaluator = sys.modules.get("lmms_eval.evaluator")
    patch = getattr(evaluator, "_enable_reentrant_filelocks", None)
    if patch is None or getattr(patch, "_patched", False):
        return False
    try:
        if importlib.util.find_spec("filelock._api") is not None:
            return False
    except ImportError:  # filelock itself missing: the patch would fail on it too
        pass
    patch._patched = True
    return True


def _takes_keyword(function: Any, name: str) -> bool:
    """Whether ``function`` accepts the keyword argument ``name`` (or any, via ``**kwargs``)."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):  # no introspectable signature: do not guess
        return False
    return any(
        (p.name == name and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
        or p.kind == p.VAR_KEYWORD
        for p in parameters
    )


def _first_image(visuals: Any) -> Image.Image | None:
    """The first image among (possibly nested) visuals; lmms-eval passes a list of PIL images."""
    if visuals is None:
        return None
    if isinstance(visuals, Image.Image | str):
        return load_image(visuals)
    if isinstance(visuals, Iterable):
        for item in visuals:
            image = _first_image(item)
            if image is not None:
                return image
    return None


def truncate_at_stop(text: str, until: str | Sequence[str] | None) -> str:
    """Cut ``text`` at the earliest stop string (lmms-eval ``gen_kwargs['until']``)."""
    stops = [until] if isinstance(until, str) else list(until or [])
    cut = len(text)
    for stop in stops:
        if stop:
            position = text.find(stop)
            if position != -1:
                cut = min(cut, position)
    return text[:cut]


class VLoRALmms(_LmmsBase):  # type: ignore[misc,valid-type]
    """lmms-eval ``lmms`` model for a one-image model (falls back to ``object`` without lmms-eval).

    Args:
        generate_fn / model / factory: how to reach the model (exactly one; see
            ``vlora.eval.adapters.common``); extra keyword arguments go to the factory.
        prompt_format: ``"conversation"`` (default), ``"user"`` or ``"content"``.
        wrapping: ``"lmms-eval"`` (default, like lmms-eval's llava) or a VLMEvalKit wrapping.
        batch_size, max_batch_size: accepted because lmms-eval passes them; requests are
            generated one by one (batching belongs to the generate function).
        device: lmms-eval's ``--device`` or a ``device=`` in ``--model_args`` (both arrive here,
            not in ``factory_kwargs``); handed on to a factory that takes a ``device`` argument
            (``make_generate_fn`` does), ignored otherwise.
    """

    is_simple = True

    def __init__(
        self,
        generate_fn: GenerateFn | None = None,
        *,
        model: Any | None = None,
        factory: str | None = None,
        prompt_format: PromptFormat = "conversation",
        wrapping: PromptWrapping = "lmms-eval",
        batch_size: int | str = 1,
        max_batch_size: int | None = None,
        device: str | None = None,
        **factory_kwargs: Any,
    ) -> None:
        if LMMS_EVAL_AVAILABLE:
            super().__init__()
            skip_filelock3_workaround()
        if not hasattr(self, "task_dict"):
            self.task_dict: dict[str, Any] = {}
        if (
            device is not None
            and factory is not None
            and generate_fn is None
            and model is None
            and _takes_keyword(load_factory(factory), "device")
        ):
            factory_kwargs = {**factory_kwargs, "device": device}
        self.generate_fn = resolve_generate_fn(generate_fn, model, factory, factory_kwargs)
        self.prompt_format: PromptFormat = prompt_format
        self.wrapping: PromptWrapping = wrapping
        self.batch_size_per_gpu = int(batch_size) if str(batch_size).isdigit() else 1

    def generate_until(self, requests: Sequence[Any]) -> list[str]:
        """Greedy answers for ``(context, gen_kwargs, doc_to_visual, doc_id, task, split)`` requests."""
        outputs = []
        for request in requests:
            context, gen_kwargs, doc_to_visual, doc_id, task, split = request.args
            visuals = doc_to_visual(self.task_dict[task][split][doc_id]) if doc_to_visual else None
            image = _first_image(visuals)
            prompt = render_prompt(context, image is not None, self.prompt_format, self.wrapping)
            text = truncate_at_stop(
                self.generate_fn(prompt, image), (gen_kwargs or {}).get("until")
            )
            outputs.append(text)
            cache_hook = getattr(self, "cache_hook", None)
            if cache_hook is not None:
                cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
        return outputs

    def loglikelihood(self, requests: Sequence[Any]) -> list[tuple[float, bool]]:
        raise NotImplementedError("the VLoRA lmms-eval adapter supports generation tasks only")

    def generate_until_multi_round(self, requests: Sequence[Any]) -> list[str]:
        raise NotImplementedError("the VLoRA lmms-eval adapter does not support multi-round tasks")


def lmms_eval_manifest(name: str = "vlora") -> Any:
    """The ``ModelManifest`` that names :class:`VLoRALmms` as the simple model ``name``.

    This is what the ``lmms_eval.models`` entry point in ``pyproject.toml`` points at: lmms-eval
    (>= 0.7, ``lmms_eval.models.registry_v2``) loads each entry point of that group and, when the
    object is callable, calls it with no arguments and expects a manifest back. Pointing the entry
    point at the class itself would call ``VLoRALmms()`` there, which fails (no model given) and
    makes lmms-eval drop every plugin model with a warning.
    """
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=name, simple_class_path=f"{__name__}.{VLoRALmms.__name__}")


def register_with_lmms_eval(name: str = "vlora") -> None:
    """Register :class:`VLoRALmms` under ``name`` in lmms-eval's model registry (needs lmms-eval).

    Only needed where the package is not installed (no entry point), e.g. in a launcher script.
    """
    if not LMMS_EVAL_AVAILABLE:
        raise RuntimeError("lmms-eval is not installed")
    try:
        from lmms_eval.models import MODEL_REGISTRY_V2
    except ImportError:  # lmms-eval < 0.7: one flat registry, filled by @register_model
        from lmms_eval.api.registry import register_model

        register_model(name)(VLoRALmms)
        return
    MODEL_REGISTRY_V2.register_manifest(lmms_eval_manifest(name), overwrite=True)
