"""Reading an image's bytes from where ingest found it: local file, zip member, http(s) URL, S3.

URL fetching is SSRF-safe: the host is resolved once, every address is checked, and the
connection goes to the checked address (so DNS rebinding cannot swap it afterwards).
"""

from __future__ import annotations

import ipaddress
import socket
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urljoin, urlsplit

import urllib3

from pipeline.errors import BadInputError, ConfigError, ServiceError
from pipeline.models import SourceRef

CHUNK = 64 * 1024
MAX_REDIRECTS = 3


@dataclass(frozen=True)
class FetchLimits:
    max_bytes: int
    timeout_s: float = 10.0
    allow_private: bool = False
    s3_allowed_buckets: tuple[str, ...] = ()
    zip_max_ratio: float = 100.0


def read_source(ref: SourceRef, limits: FetchLimits, s3_client_factory: Callable[[], Any] | None = None) -> bytes:
    """The raw bytes behind a SourceRef, never more than `limits.max_bytes`."""
    if ref.kind == "file":
        return read_file(Path(ref.location), limits.max_bytes)
    if ref.kind == "zip":
        return read_zip_member(Path(ref.location), ref.member or "", limits)
    if ref.kind == "url":
        return fetch_url(ref.location, limits)
    if ref.kind == "s3":
        if s3_client_factory is None:
            raise ConfigError("Reading s3:// images needs AWS access, which is not configured.")
        return fetch_s3(ref.location, limits, s3_client_factory())
    raise BadInputError(f"Unknown source kind {ref.kind!r}.")


def read_file(path: Path, max_bytes: int) -> bytes:
    try:
        size = path.stat().st_size
    except FileNotFoundError as exc:
        raise BadInputError(f"The file {path.name} no longer exists.") from exc
    if size > max_bytes:
        raise BadInputError(f"The file is {_mb(size)}; the limit is {_mb(max_bytes)}.")
    return path.read_bytes()


def read_zip_member(zip_path: Path, member: str, limits: FetchLimits) -> bytes:
    """Stream one member, enforcing size and ratio while reading (headers can lie)."""
    try:
        with zipfile.ZipFile(zip_path) as archive:
            info = archive.getinfo(member)
            budget = min(limits.max_bytes, int(max(info.compress_size, 1) * limits.zip_max_ratio))
            chunks, total = [], 0
            with archive.open(info) as stream:
                while chunk := stream.read(CHUNK):
                    total += len(chunk)
                    if total > budget:
                        raise BadInputError("This zip entry expands far beyond its compressed size (possible zip bomb); skipped.")
                    chunks.append(chunk)
            return b"".join(chunks)
    except KeyError as exc:
        raise BadInputError(f"{member} is missing from the zip.") from exc
    except (zipfile.BadZipFile, EOFError, OSError, NotImplementedError) as exc:
        raise BadInputError("This zip entry is damaged or uses an unsupported compression method.") from exc
    except RuntimeError as exc:  # zipfile raises RuntimeError for encrypted members
        raise BadInputError("This zip entry is password-protected.") from exc


def check_public_address(host: str, port: int, allow_private: bool) -> list[str]:
    """Resolve `host` and refuse it if *any* address is private, loopback, link-local or reserved."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise BadInputError(f"The image URL's host {host} could not be found.") from exc
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    if not allow_private:
        for address in addresses:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
                ip = ip.ipv4_mapped
            if not ip.is_global or ip.is_multicast:
                raise BadInputError(f"The image URL points to a private or internal address ({host}); only public web addresses are allowed.")
    return addresses


def fetch_url(url: str, limits: FetchLimits) -> bytes:
    for _ in range(MAX_REDIRECTS + 1):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise BadInputError("Only http:// and https:// image URLs are allowed.")
        if not parts.hostname:
            raise BadInputError("The image URL has no host name.")
        if parts.username or parts.password:
            raise BadInputError("Image URLs with embedded credentials are not allowed.")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        address = check_public_address(parts.hostname, port, limits.allow_private)[0]
        response = _request(parts, address, port, limits)
        try:
            if response.status in (301, 302, 303, 307, 308) and response.headers.get("Location"):
                url = urljoin(url, response.headers["Location"])
                continue
            if response.status != 200:
                raise BadInputError(f"The image URL answered HTTP {response.status}.")
            return _read_limited(response, limits.max_bytes)
        finally:
            response.release_conn()
    raise BadInputError("The image URL redirects too many times.")


def _request(parts, address: str, port: int, limits: FetchLimits) -> urllib3.BaseHTTPResponse:
    timeout = urllib3.Timeout(connect=limits.timeout_s, read=limits.timeout_s)
    common = dict(host=address, port=port, timeout=timeout, retries=False, maxsize=1)
    if parts.scheme == "https":
        # Connect to the checked IP but verify the certificate and send SNI for the real host name.
        pool = urllib3.HTTPSConnectionPool(**common, server_hostname=parts.hostname, assert_hostname=parts.hostname, cert_reqs="CERT_REQUIRED")
    else:
        pool = urllib3.HTTPConnectionPool(**common)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    host_header = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
    try:
        return pool.urlopen("GET", path, headers={"Host": host_header, "User-Agent": "product-tagger/1.0"}, preload_content=False, redirect=False)
    except urllib3.exceptions.TimeoutError as exc:
        raise BadInputError("The image URL did not answer in time.") from exc
    except urllib3.exceptions.SSLError as exc:
        raise BadInputError("The image URL's HTTPS certificate is not valid.") from exc
    except urllib3.exceptions.HTTPError as exc:
        raise BadInputError("The image URL could not be reached.") from exc


def _read_limited(response: urllib3.BaseHTTPResponse, max_bytes: int) -> bytes:
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise BadInputError(f"The image at that URL is {_mb(int(declared))}; the limit is {_mb(max_bytes)}.")
    chunks, total = [], 0
    try:
        for chunk in response.stream(CHUNK):
            total += len(chunk)
            if total > max_bytes:
                raise BadInputError(f"The image at that URL is larger than the {_mb(max_bytes)} limit.")
            chunks.append(chunk)
    except urllib3.exceptions.TimeoutError as exc:
        raise BadInputError("The image URL stopped sending data (timed out).") from exc
    except urllib3.exceptions.HTTPError as exc:
        raise BadInputError("The download from the image URL broke off.") from exc
    return b"".join(chunks)


def parse_s3_uri(uri: str) -> tuple[str, str]:
    parts = urlsplit(uri)
    if parts.scheme != "s3" or not parts.netloc or not parts.path.strip("/"):
        raise BadInputError(f"{uri} is not a valid s3://bucket/key address.")
    return parts.netloc, parts.path.lstrip("/")


def parse_s3_prefix(uri: str) -> tuple[str, str]:
    """A configured s3://bucket[/prefix] location (settings), as (bucket, prefix without slashes)."""
    parts = urlsplit(uri)
    if parts.scheme != "s3" or not parts.netloc:
        raise ConfigError(f"{uri!r} is not an s3://bucket/prefix location.")
    return parts.netloc, parts.path.strip("/")


def read_s3_object_if_exists(client: Any, uri: str) -> bytes | None:
    """An object this deployment wrote (async results, job outputs), or None while it is not there yet."""
    from botocore.exceptions import ClientError

    bucket, key = parse_s3_uri(uri)
    try:
        return client.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
            return None
        raise ServiceError("A result could not be read from S3; try again.") from exc


def fetch_s3(uri: str, limits: FetchLimits, client: Any) -> bytes:
    bucket, key = parse_s3_uri(uri)
    if bucket not in limits.s3_allowed_buckets:
        raise BadInputError(f"Bucket {bucket} is not one this dashboard may read (an admin can add it to S3_ALLOWED_BUCKETS).")
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        head = client.head_object(Bucket=bucket, Key=key)
        if head["ContentLength"] > limits.max_bytes:
            raise BadInputError(f"The S3 object is {_mb(head['ContentLength'])}; the limit is {_mb(limits.max_bytes)}.")
        body = client.get_object(Bucket=bucket, Key=key)["Body"]
        return body.read(limits.max_bytes + 1)[: limits.max_bytes]
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("404", "NoSuchKey", "NotFound"):
            raise BadInputError(f"{uri} does not exist.") from exc
        if code in ("403", "AccessDenied"):
            raise BadInputError(f"No permission to read {uri}.") from exc
        raise ServiceError(f"S3 could not return {uri} ({code}); try again later.") from exc
    except BotoCoreError as exc:
        raise ServiceError(f"S3 could not be reached for {uri}; try again later.") from exc


def _mb(size: int) -> str:
    return f"{size / 1024 / 1024:.1f} MB"
