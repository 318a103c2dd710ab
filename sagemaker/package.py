"""Build the SageMaker model artifact and upload it.

    python sagemaker/package.py --out dist/ [--weights DIR] [--bucket B [--prefix blip2/]] [--uncompressed]

Layout SageMaker expects (model data unpacked into /opt/ml/model):
    code/inference.py        the handler (model_fn / input_fn / predict_fn / output_fn)
    code/blip_core.py        model-side captioning, copied from pipeline/blip_core.py
    config.json, *.safetensors, tokenizer/processor files   only with --weights

No code/requirements.txt: the container's own torch / transformers are the ones the handler is tested
on (sagemaker/container.json), and the toolkit would pip-install such a file over them at start-up.

Default: a small code-only `blip2-endpoint.tar.gz`; the handler downloads `BLIP2_MODEL_ID` at the
pinned `BLIP2_MODEL_REVISION` on start. `--uncompressed` uploads the same files under an S3 prefix
instead (ModelDataSource S3Prefix, CompressionType None): with multi-GB weights SageMaker copies
files directly instead of downloading and un-tarring one archive, which shortens cold starts.
"""

from __future__ import annotations

import argparse
import gzip
import io
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
ARCHIVE_NAME = "blip2-endpoint.tar.gz"


@dataclass(frozen=True)
class ArtifactFile:
    arcname: str
    source: Path


def artifact_files(weights_dir: Path | None = None) -> list[ArtifactFile]:
    """Every file of the model artifact with its path inside the archive / S3 prefix."""
    files = [
        ArtifactFile("code/inference.py", HERE / "code" / "inference.py"),
        ArtifactFile("code/blip_core.py", REPO / "pipeline" / "blip_core.py"),
    ]
    if weights_dir is not None:
        weights_dir = Path(weights_dir)
        if not (weights_dir / "config.json").is_file():
            raise SystemExit(f"error: {weights_dir} has no config.json; is it a saved model directory?")
        for path in sorted(p for p in weights_dir.rglob("*") if p.is_file()):
            relative = path.relative_to(weights_dir).as_posix()
            if relative.startswith(".") or "/." in relative or relative.startswith("code/"):
                continue  # caches and hub metadata stay out; code/ is ours
            files.append(ArtifactFile(relative, path))
    return files


def build_archive(out_dir: Path, weights_dir: Path | None = None) -> Path:
    """Write a reproducible tar.gz (fixed mtimes/owners) so unchanged inputs give identical bytes."""
    out_dir.mkdir(parents=True, exist_ok=True)
    archive = out_dir / ARCHIVE_NAME
    # gzip's own header carries a timestamp too: fixed at 0, or two builds a second apart differ.
    with open(archive, "wb") as raw, gzip.GzipFile(filename="", mode="wb", compresslevel=6, fileobj=raw, mtime=0) as zipped, \
            tarfile.open(fileobj=zipped, mode="w") as tar:
        for item in artifact_files(weights_dir):
            data = item.source.read_bytes()
            info = tarfile.TarInfo(item.arcname)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(data))
    return archive


def upload_archive(archive: Path, bucket: str, prefix: str, s3_client) -> str:
    key = f"{prefix.strip('/')}/{archive.name}"
    s3_client.upload_file(str(archive), bucket, key, ExtraArgs={"ServerSideEncryption": "AES256"})
    return f"s3://{bucket}/{key}"


def upload_uncompressed(bucket: str, prefix: str, s3_client, weights_dir: Path | None = None) -> str:
    """Upload every artifact file under s3://bucket/prefix/uncompressed/ (for ModelDataSource S3Prefix)."""
    base = f"{prefix.strip('/')}/uncompressed"
    for item in artifact_files(weights_dir):
        s3_client.upload_file(str(item.source), bucket, f"{base}/{item.arcname}", ExtraArgs={"ServerSideEncryption": "AES256"})
    return f"s3://{bucket}/{base}/"  # SageMaker requires the trailing slash for S3Prefix model data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Package the BLIP-2 handler (and optionally weights) for SageMaker.")
    parser.add_argument("--out", type=Path, default=REPO / "dist")
    parser.add_argument("--weights", type=Path, help="saved model directory to include (default: none, the handler downloads BLIP2_MODEL_ID)")
    parser.add_argument("--bucket", help="upload to this S3 bucket")
    parser.add_argument("--prefix", default="blip2/")
    parser.add_argument("--uncompressed", action="store_true", help="upload files under an S3 prefix instead of one archive")
    parser.add_argument("--region")
    args = parser.parse_args(argv)
    client = None
    if args.bucket:
        import boto3

        client = boto3.client("s3", region_name=args.region)
    if args.uncompressed:
        if client is None:
            parser.error("--uncompressed needs --bucket")
        print(upload_uncompressed(args.bucket, args.prefix, client, args.weights))
        return 0
    archive = build_archive(args.out, args.weights)
    print(f"built {archive} ({archive.stat().st_size / 1024:.1f} KB)")
    if client is not None:
        print(upload_archive(archive, args.bucket, args.prefix, client))
    return 0


if __name__ == "__main__":
    sys.exit(main())
