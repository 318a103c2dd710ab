import zipfile

import boto3
import pytest
from moto import mock_aws

from pipeline.errors import BadInputError
from pipeline.fetch import FetchLimits, check_public_address, fetch_s3, fetch_url, read_zip_member
from support.images import jpeg_bytes
from support.servers import FileServer

PUBLIC_ONLY = FetchLimits(max_bytes=1_000_000, timeout_s=2.0)
LOCAL_OK = FetchLimits(max_bytes=1_000_000, timeout_s=0.5, allow_private=True)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/a.jpg",
        "http://localhost:8080/a.jpg",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.5/a.jpg",
        "http://192.168.1.1/a.jpg",
        "http://172.16.0.1/a.jpg",
        "http://[::1]/a.jpg",
        "http://[::ffff:127.0.0.1]/a.jpg",
        "http://0.0.0.0/a.jpg",
        "http://100.64.0.1/a.jpg",
    ],
)
def test_private_loopback_link_local_and_metadata_addresses_are_refused(url):
    with pytest.raises(BadInputError, match="private or internal address"):
        fetch_url(url, PUBLIC_ONLY)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/a.jpg", "gopher://x/", "http://user:pw@example.com/a.jpg"])
def test_other_schemes_and_credentials_are_refused(url):
    with pytest.raises(BadInputError):
        fetch_url(url, PUBLIC_ONLY)


def test_every_resolved_address_is_checked():
    # "localhost" may resolve to both ::1 and 127.0.0.1: one private address is enough to refuse.
    with pytest.raises(BadInputError):
        check_public_address("localhost", 80, allow_private=False)
    assert check_public_address("localhost", 80, allow_private=True)


def test_fetch_when_private_addresses_are_allowed_and_limits_hold():
    image = jpeg_bytes()
    with FileServer() as server:
        ok = server.add("/ok.jpg", image)
        big = server.add("/big.jpg", b"x" * 2_000_000)
        chunked_big = server.add("/nolength.jpg", b"x" * 2_000_000, headers={"Content-Type": "image/jpeg", "X-Test-Omit-Length": "1"})
        slow = server.add("/slow.jpg", image, delay=2.0)
        missing = server.url + "/missing.jpg"
        redirect = server.add("/moved.jpg", b"", status=302, headers={"Location": "/ok.jpg"})
        to_file = server.add("/to-file.jpg", b"", status=302, headers={"Location": "file:///etc/passwd"})
        assert fetch_url(ok, LOCAL_OK) == image
        assert fetch_url(redirect, LOCAL_OK) == image
        with pytest.raises(BadInputError, match="limit is 1.0 MB"):
            fetch_url(big, LOCAL_OK)
        with pytest.raises(BadInputError, match="larger than the 1.0 MB limit"):
            fetch_url(chunked_big, LOCAL_OK)
        with pytest.raises(BadInputError, match="did not answer in time|timed out"):
            fetch_url(slow, LOCAL_OK)
        with pytest.raises(BadInputError, match="HTTP 404"):
            fetch_url(missing, LOCAL_OK)
        with pytest.raises(BadInputError, match="Only http"):
            fetch_url(to_file, LOCAL_OK)
        with pytest.raises(BadInputError, match="private or internal"):
            fetch_url(ok, PUBLIC_ONLY)  # same server, default settings: refused


def test_zip_member_reading_enforces_ratio_while_streaming(tmp_path):
    path = tmp_path / "z.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("zeros.jpg", b"\0" * 5_000_000)
    with pytest.raises(BadInputError, match="zip bomb"):
        read_zip_member(path, "zeros.jpg", FetchLimits(max_bytes=10_000_000, zip_max_ratio=50))


@mock_aws
def test_s3_only_from_allowed_buckets():
    client = boto3.client("s3", region_name="us-east-1")
    client.create_bucket(Bucket="uploads")
    client.put_object(Bucket="uploads", Key="p/a.jpg", Body=b"jpeg-bytes")
    limits = FetchLimits(max_bytes=1000, s3_allowed_buckets=("uploads",))
    assert fetch_s3("s3://uploads/p/a.jpg", limits, client) == b"jpeg-bytes"
    with pytest.raises(BadInputError, match="does not exist"):
        fetch_s3("s3://uploads/p/missing.jpg", limits, client)
    with pytest.raises(BadInputError, match="not one this dashboard may read"):
        fetch_s3("s3://other-bucket/a.jpg", limits, client)
    client.put_object(Bucket="uploads", Key="big.jpg", Body=b"x" * 2000)
    with pytest.raises(BadInputError, match="limit"):
        fetch_s3("s3://uploads/big.jpg", limits, client)
