"""The S3 provider keeps its admin clients (issue 12): a boto3 client costs ~30 ms to make, and a
provision made two (s3 and iam) afresh each time."""

from __future__ import annotations

from tether.providers.base import ClusterSpec
from tether.providers.s3 import S3Provider, _Target


def target(url: str) -> _Target:
    return _Target.parse(ClusterSpec(id=1, kind="s3", region="local", url=url, settings={}))


def test_the_admin_clients_of_a_cluster_are_kept_per_service_and_per_url() -> None:
    one = target("s3://ADMINKEY:adminsecret@127.0.0.1:9000/?iam=http://127.0.0.1:9001")
    s3 = S3Provider._client(one, "s3")
    assert S3Provider._client(one, "s3") is s3  # kept
    assert S3Provider._client(one, "iam") is not s3  # one per service
    # a changed cluster URL or admin key is another cluster: its own client
    moved = target("s3://ADMINKEY:adminsecret@127.0.0.1:9002/?iam=http://127.0.0.1:9001")
    rekeyed = target("s3://ADMINKEY:othersecret@127.0.0.1:9000/?iam=http://127.0.0.1:9001")
    assert S3Provider._client(moved, "s3") is not s3
    assert S3Provider._client(rekeyed, "s3") is not s3
    # a client with another key, or other retries, is made for the call
    assert S3Provider._client(one, "s3", "USERKEY", "usersecret") is not s3
    assert S3Provider._client(one, "s3", attempts=1) is not S3Provider._client(
        one, "s3", attempts=1)
