"""The Prefect layer: tasks wrapping `pipelines.<stage>.run`, the `vlora` flows, deployments.

No ML logic lives here; everything a flow does can be done with `python -m pipelines`.
"""
