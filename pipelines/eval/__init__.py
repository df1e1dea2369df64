"""The eval stage's pieces (``pipelines/eval/stage.py`` is the stage):

* ``prepare``: benchmark data → validated, limited tables and prompt strings (no model);
* ``actor`` / ``generation``: batched greedy generation on a Ray Data actor pool;
* ``outputs``: per-benchmark predictions and scores, written atomically, found again on resume;
* ``report``: report.md beside the paper's Table 1, scores.json, flat metrics;
* ``checkpoint``: checkpoint validation and identity for the stage key;
* ``runner``: the stage body tying them together.
"""
