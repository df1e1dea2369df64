"""The ray distributor's address check, without a cluster (Ray's calls stubbed)."""

from __future__ import annotations

import pytest
import ray

import pipelines.core.ray_cluster as ray_cluster
from pipelines.download.img2dataset_runner import Img2DatasetJob, ray_distributor_address


@pytest.fixture
def cluster_of(monkeypatch):
    def make(node_count: int) -> None:
        monkeypatch.setattr(ray_cluster, "ensure_ray", lambda config=None: None)
        monkeypatch.setattr(ray_cluster, "cluster_address", lambda: "10.0.0.5:6379")
        nodes = [{"Alive": True}] * node_count + [{"Alive": False}]
        monkeypatch.setattr(ray, "nodes", lambda: nodes)

    return make


def test_remote_sources_go_to_any_cluster(cluster_of) -> None:
    cluster_of(3)
    assert ray_distributor_address(None, loopback_source=None) == "10.0.0.5:6379"


def test_loopback_sources_only_on_a_single_node(cluster_of) -> None:
    cluster_of(1)  # a dead node does not count
    assert ray_distributor_address(None, loopback_source="easyvqa") == "10.0.0.5:6379"
    cluster_of(2)
    with pytest.raises(ValueError, match=r"download\.distributor: 'ray' on a 2-node cluster"):
        ray_distributor_address(None, loopback_source="easyvqa")


def test_job_passes_the_distributor_to_img2dataset() -> None:
    fields = dict.fromkeys(("url_list", "output_folder", "resize_mode"), "x") | dict.fromkeys(
        ("image_size", "processes", "threads", "timeout", "retries", "encode_quality"), 1
    )
    job = Img2DatasetJob(
        **fields,
        resize_only_if_bigger=False,
        number_sample_per_shard=4,
        save_additional_columns=[],
        distributor="ray",
        ray_address="127.0.0.1:1",
    )
    assert job.download_kwargs()["distributor"] == "ray"
    default = Img2DatasetJob(
        **fields, resize_only_if_bigger=False, number_sample_per_shard=4, save_additional_columns=[]
    )
    assert default.download_kwargs()["distributor"] == "multiprocessing"
