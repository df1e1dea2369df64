"""Model classes that let VLMEvalKit and lmms-eval run a VLoRA (or any one-image) model.

Both import without the toolkits installed (the base class falls back to ``object``), so the
project's tests and type checks never need them. See each module's docstring for the commands.
"""
