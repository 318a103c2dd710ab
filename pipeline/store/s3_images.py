"""S3ImageStore: photos for more than one dashboard task (IMAGE_BUCKET set), in a private bucket.

    s3://<bucket>/uploads/<folder>/<name>        browser uploads (expired by a lifecycle rule, see infra/)
    s3://<bucket>/normalized/<ab>/<key>.jpg      normalized photos, one object per content key
    s3://<bucket>/thumbnails/<ab>/<key>.jpg      96 px previews for result tables

Pages never proxy image bytes: they get presigned GET URLs that expire (PRESIGN_EXPIRY_S).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pipeline.images.thumbnails import thumbnail_jpeg


class S3ImageStore:
    def __init__(self, client: Any, bucket: str, *, uploads_root: Path, presign_expiry_s: int = 3600) -> None:
        self.client, self.bucket = client, bucket
        self.uploads_root = Path(uploads_root)
        self.presign_expiry_s = presign_expiry_s

    @classmethod
    def from_settings(cls, settings) -> "S3ImageStore":
        import boto3
        from botocore.config import Config

        config = Config(region_name=settings.aws_region, retries={"max_attempts": 6, "mode": "adaptive"},
                        signature_version="s3v4")
        return cls(boto3.client("s3", config=config), settings.image_bucket, uploads_root=settings.data_dir / "uploads",
                   presign_expiry_s=settings.presign_expiry_s)

    @staticmethod
    def _key(prefix: str, content_key: str) -> str:
        return f"{prefix}/{content_key[:2]}/{content_key}.jpg"

    def save(self, content_key: str, jpeg: bytes) -> str:
        # Same content key, same bytes: writing again is harmless, so no existence check is needed.
        key = self._key("normalized", content_key)
        self.client.put_object(Bucket=self.bucket, Key=key, Body=jpeg, ContentType="image/jpeg")
        self.client.put_object(Bucket=self.bucket, Key=self._key("thumbnails", content_key), Body=thumbnail_jpeg(jpeg),
                               ContentType="image/jpeg")
        return f"s3://{self.bucket}/{key}"

    def _presign(self, key: str) -> str:
        return self.client.generate_presigned_url("get_object", Params={"Bucket": self.bucket, "Key": key},
                                                  ExpiresIn=self.presign_expiry_s)

    def _object_key(self, location: str | None) -> str | None:
        if not location:
            return None
        parsed = urlparse(location)
        if parsed.scheme != "s3" or parsed.netloc != self.bucket:
            return None
        return parsed.path.lstrip("/")

    def photo_url(self, location: str | None) -> str | None:
        key = self._object_key(location)
        return self._presign(key) if key else None

    def thumbnail_url(self, location: str | None) -> str | None:
        key = self._object_key(location)
        if not key or not key.startswith("normalized/"):
            return None
        return self._presign("thumbnails/" + key.removeprefix("normalized/"))

    def _upload_key(self, path: Path) -> str | None:
        try:
            relative = Path(path).resolve().relative_to(self.uploads_root.resolve())
        except ValueError:
            return None  # not a browser upload (a CLI path, say): nothing to share
        return "uploads/" + relative.as_posix()

    def keep_upload(self, path: Path) -> None:
        key = self._upload_key(path)
        if key:
            self.client.upload_file(str(path), self.bucket, key)

    def ensure_upload(self, path: Path) -> None:
        """A batch resumed on another task finds its upload in S3 and copies it to the same path."""
        path = Path(path)
        key = self._upload_key(path)
        if key and not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            self.client.download_file(self.bucket, key, str(path))
