"""STORE=dynamodb + IMAGE_BUCKET: two dashboard tasks sharing one table and one private bucket (moto)."""

from __future__ import annotations

import urllib.parse
from pathlib import Path

import boto3
import pytest
from moto import mock_aws
from pydantic import ValidationError

from pipeline.batches.runner import run_batch
from pipeline.service import build_stages, create_batch
from pipeline.store.dynamo_store import DynamoStore
from pipeline.store.s3_images import S3ImageStore
from pipeline.ingest.uploads import save_uploads
from support.images import jpeg_bytes


@pytest.fixture
def aws():
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="tagging-photos")
        DynamoStore(boto3.client("dynamodb", region_name="us-east-1"), "tagging").create_table()
        yield


def task_settings(make_settings, tmp_path):
    """A Fargate task: DATA_DIR is the same path on every task (each on its own disk), plus the shared table and bucket."""
    return make_settings(data_dir=tmp_path / "data", store="dynamodb", dynamodb_table="tagging", image_bucket="tagging-photos")


def test_shared_store_needs_a_shared_bucket(make_settings):
    with pytest.raises(ValidationError, match="STORE=dynamodb needs IMAGE_BUCKET"):
        make_settings(store="dynamodb")


def test_a_batch_uploaded_on_one_task_is_finished_by_another(aws, make_settings, local_captioner, tmp_path):
    first_settings = task_settings(make_settings, tmp_path)
    first = build_stages(first_settings, captioner=local_captioner)
    assert isinstance(first.store, DynamoStore) and isinstance(first.images, S3ImageStore)
    uploads = save_uploads([(f"shirt-{i}.jpg", jpeg_bytes(seed=i)) for i in range(2)], first_settings.data_dir / "uploads")
    for path in uploads:
        first.images.keep_upload(path)
    batch = create_batch(first.store, first_settings, uploads, name="shared", created_by="ann")
    # Task A dies before processing; task B (another disk) resumes from the shared table.
    for path in uploads:
        path.unlink()  # task B's disk does not have A's files
    second = build_stages(task_settings(make_settings, tmp_path), captioner=local_captioner)
    assert second.store.unfinished_batch_ids() == [batch.id]
    assert run_batch(second, batch.id, concurrency=2).ok == 2
    items = first.store.list_items(batch.id)  # task A's view of the same table
    assert all(i.status == "ok" and i.image_path.startswith("s3://tagging-photos/normalized/") for i in items)
    keys = {o["Key"] for o in boto3.client("s3", region_name="us-east-1").list_objects_v2(Bucket="tagging-photos")["Contents"]}
    assert {k.split("/")[0] for k in keys} == {"uploads", "normalized", "thumbnails"}
    url = first.images.thumbnail_url(items[0].image_path)
    parsed = urllib.parse.urlparse(url)
    assert parsed.scheme == "https" and "/thumbnails/" in parsed.path
    assert "X-Amz-Expires=3600" in url and "X-Amz-Signature=" in url
    assert first.images.photo_url(items[0].image_path).split("?")[0].endswith(f"normalized/{items[0].content_key[:2]}/{items[0].content_key}.jpg")
    assert first.images.photo_url("s3://another-bucket/x.jpg") is None  # only this bucket's objects are presigned


def test_bucket_objects_are_what_the_pages_show(aws):
    client = boto3.client("s3", region_name="us-east-1")
    images = S3ImageStore(client, "tagging-photos", uploads_root=Path("/nonexistent"), presign_expiry_s=60)
    jpeg = jpeg_bytes(size=(640, 480))
    location = images.save("ab" * 32, jpeg)
    assert location == f"s3://tagging-photos/normalized/ab/{'ab' * 32}.jpg"
    assert client.get_object(Bucket="tagging-photos", Key=location.split("tagging-photos/")[1])["Body"].read() == jpeg
    thumb = client.get_object(Bucket="tagging-photos", Key=f"thumbnails/ab/{'ab' * 32}.jpg")
    assert thumb["ContentType"] == "image/jpeg" and len(thumb["Body"].read()) < len(jpeg) / 4
