"""Fetch's rules stated exactly (written from mutants that survived tests/test_fetch.py, docs/mutation.md):
S3 addresses and errors, file limits, what staging refuses, and the words each refusal uses."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import pytest
from botocore.config import Config
from moto import mock_aws
from support.images import jpeg_bytes
from support.servers import FileServer

from pipeline.errors import BadInputError, ConfigError, ServiceError
from pipeline.ingest.fetch import (
    FetchLimits,
    check_public_address,
    fetch_s3,
    fetch_url,
    is_public_address,
    literal_addresses,
    parse_s3_prefix,
    parse_s3_uri,
    read_file,
    read_s3_object_if_exists,
    read_source,
    screen_urls,
    url_refusal,
)
from pipeline.models import SourceRef

MB = 1024 * 1024
PRIVATE = "The image URL points to a private or internal address ({}); only public web addresses are allowed."


# S3 addresses -----------------------------------------------------------------------------------
def test_s3_addresses_are_read_as_bucket_and_key():
    assert parse_s3_uri("s3://bucket/a/b.jpg") == ("bucket", "a/b.jpg")
    assert parse_s3_uri("s3://bucket//a.jpg") == ("bucket", "a.jpg")
    for bad in ("s3://bucket", "s3://bucket/", "s3:///a.jpg", "https://bucket/a.jpg", "bucket/a.jpg"):
        with pytest.raises(BadInputError) as refused:
            parse_s3_uri(bad)
        assert str(refused.value) == f"{bad} is not a valid s3://bucket/key address."


def test_configured_s3_locations_are_read_as_bucket_and_prefix():
    assert parse_s3_prefix("s3://bucket/in/coming/") == ("bucket", "in/coming")
    assert parse_s3_prefix("s3://bucket") == ("bucket", "")
    for bad in ("https://bucket/x", "s3:///x"):
        with pytest.raises(ConfigError) as refused:
            parse_s3_prefix(bad)
        assert str(refused.value) == f"{bad!r} is not an s3://bucket/prefix location."


@mock_aws
def test_s3_reads_within_the_limit_with_plain_reasons_otherwise():
    client = boto3.client("s3", region_name="us-east-1")
    client.create_bucket(Bucket="uploads")
    limits = FetchLimits(max_bytes=MB, s3_allowed_buckets=("uploads", "other"))
    client.put_object(Bucket="uploads", Key="exact.jpg", Body=b"x" * MB)
    client.put_object(Bucket="uploads", Key="over.jpg", Body=b"x" * (2 * MB))
    assert fetch_s3("s3://uploads/exact.jpg", limits, client) == b"x" * MB  # exactly the limit is allowed
    with pytest.raises(BadInputError) as refused:
        fetch_s3("s3://uploads/over.jpg", limits, client)
    assert str(refused.value) == "The S3 object is 2.0 MB; the limit is 1.0 MB."
    with pytest.raises(BadInputError) as refused:
        fetch_s3("s3://uploads/none.jpg", limits, client)
    assert str(refused.value) == "s3://uploads/none.jpg does not exist."
    with pytest.raises(BadInputError) as refused:
        fetch_s3("s3://elsewhere/a.jpg", limits, client)
    assert str(refused.value) == "Bucket elsewhere is not one this dashboard may read (an admin can add it to S3_ALLOWED_BUCKETS)."
    with pytest.raises(ServiceError):  # an allowed bucket that does not exist: S3's own error, not the photo's
        fetch_s3("s3://other/a.jpg", limits, client)
    assert read_source(SourceRef(kind="s3", location="s3://uploads/exact.jpg"), limits, lambda: client) == b"x" * MB


@mock_aws
def test_results_this_deployment_writes_are_read_or_not_there_yet():
    client = boto3.client("s3", region_name="us-east-1")
    client.create_bucket(Bucket="results")
    client.put_object(Bucket="results", Key="out/1.json", Body=b"{}")
    assert read_s3_object_if_exists(client, "s3://results/out/1.json") == b"{}"
    assert read_s3_object_if_exists(client, "s3://results/out/2.json") is None
    with pytest.raises(ServiceError, match="could not be read from S3"):
        read_s3_object_if_exists(client, "s3://no-such-bucket/out/1.json")


class _StatusS3(BaseHTTPRequestHandler):
    """An S3 endpoint that answers every request with one status (boto3 reads HEAD errors by status),
    and GETs with S3's XML error body when `code` is set."""

    status = 403

    def do_HEAD(self):
        self.send_response(getattr(self.server, "head_status", None) or self.server.status)  # type: ignore[attr-defined]
        self.send_header("Content-Length", "5")
        self.end_headers()

    def do_GET(self):
        code = getattr(self.server, "code", None)
        body = f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>m</Message></Error>".encode() if code else b""
        self.send_response(self.server.status)  # type: ignore[attr-defined]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("status, error, message", [
    (403, BadInputError, "No permission to read s3://uploads/a.jpg."),
    (404, BadInputError, "s3://uploads/a.jpg does not exist."),
    (400, ServiceError, "S3 could not return s3://uploads/a.jpg (400); try again later."),
])
def test_s3_errors_are_told_apart(status, error, message):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StatusS3)
    server.status = status  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = boto3.client("s3", region_name="us-east-1", endpoint_url=f"http://127.0.0.1:{server.server_address[1]}",
                              config=Config(retries={"max_attempts": 1}, s3={"addressing_style": "path"}))
        with pytest.raises(error) as refused:
            fetch_s3("s3://uploads/a.jpg", FetchLimits(max_bytes=MB, s3_allowed_buckets=("uploads",)), client)
        assert str(refused.value) == message
    finally:
        server.shutdown()
        server.server_close()


def test_an_unreachable_s3_is_a_service_error():
    with socket.socket() as unused:  # a port nothing listens on
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    client = boto3.client("s3", region_name="us-east-1", endpoint_url=f"http://127.0.0.1:{port}",
                          config=Config(retries={"max_attempts": 1}, connect_timeout=2))
    with pytest.raises(ServiceError) as refused:
        fetch_s3("s3://uploads/a.jpg", FetchLimits(max_bytes=MB, s3_allowed_buckets=("uploads",)), client)
    assert str(refused.value) == "S3 could not be reached for s3://uploads/a.jpg; try again later."


def test_s3_sources_need_aws_access_and_unknown_kinds_fail_their_row():
    with pytest.raises(ConfigError) as refused:
        read_source(SourceRef(kind="s3", location="s3://b/k.jpg"), FetchLimits(max_bytes=MB))
    assert str(refused.value) == "Reading s3:// images needs AWS access, which is not configured."
    with pytest.raises(BadInputError) as refused:
        read_source(SourceRef(kind="ftp", location="x"), FetchLimits(max_bytes=MB))  # type: ignore[arg-type]
    assert str(refused.value) == "Unknown source kind 'ftp'."


# Local files -------------------------------------------------------------------------------------
def test_local_files_up_to_the_limit_are_read(tmp_path):
    exact, over = tmp_path / "exact.jpg", tmp_path / "over.jpg"
    exact.write_bytes(b"x" * MB)
    over.write_bytes(b"x" * (MB + 1))
    assert read_file(exact, MB) == b"x" * MB
    assert read_source(SourceRef(kind="file", location=str(exact)), FetchLimits(max_bytes=MB)) == b"x" * MB
    with pytest.raises(BadInputError) as refused:
        read_file(over, MB)
    assert str(refused.value) == "The file is 1.0 MB; the limit is 1.0 MB."
    with pytest.raises(BadInputError) as refused:
        read_file(tmp_path / "gone.jpg", MB)
    assert str(refused.value) == "The file gone.jpg no longer exists."


# URL downloads ---------------------------------------------------------------------------------
LOCAL = FetchLimits(max_bytes=MB, timeout_s=30.0, allow_private=True)


def test_a_download_of_exactly_the_limit_passes_and_one_byte_more_fails():
    with FileServer() as server:
        exact = server.add("/exact.jpg", b"x" * MB)
        over = server.add("/over.jpg", b"x" * (MB + 1))
        over_unsized = server.add("/over-unsized.jpg", b"x" * (MB + 1), headers={"X-Test-Omit-Length": "1"})
        exact_unsized = server.add("/exact-unsized.jpg", b"x" * MB, headers={"X-Test-Omit-Length": "1"})
        assert fetch_url(exact, LOCAL) == b"x" * MB
        assert fetch_url(exact_unsized, LOCAL) == b"x" * MB
        with pytest.raises(BadInputError) as refused:
            fetch_url(over, LOCAL)
        assert str(refused.value) == "The image at that URL is 1.0 MB; the limit is 1.0 MB."
        with pytest.raises(BadInputError) as refused:
            fetch_url(over_unsized, LOCAL)
        assert str(refused.value) == "The image at that URL is larger than the 1.0 MB limit."


def test_redirects_are_followed_three_times_not_four():
    image = jpeg_bytes()
    with FileServer() as server:
        server.add("/ok.jpg", image)
        for hop, target in (("/r1", "/r2"), ("/r2", "/r3"), ("/r3", "/ok.jpg"), ("/r0", "/r1")):
            server.add(hop, b"", status=302, headers={"Location": target})
        server.add("/p1", b"", status=301, headers={"Location": "/p2"})
        server.add("/p2", b"", status=307, headers={"Location": "/p3"})
        server.add("/p3", b"", status=308, headers={"Location": "/p4"})
        server.add("/p4", b"", status=303, headers={"Location": "/ok.jpg"})
        server.add("/no-location", b"", status=302, headers={})
        assert fetch_url(server.url + "/r1", LOCAL) == image
        with pytest.raises(BadInputError) as refused:
            fetch_url(server.url + "/r0", LOCAL)
        assert str(refused.value) == "The image URL redirects too many times."
        with pytest.raises(BadInputError, match="redirects too many times"):
            fetch_url(server.url + "/p1", LOCAL)  # every redirect status counts
        with pytest.raises(BadInputError) as refused:
            fetch_url(server.url + "/no-location", LOCAL)
        assert str(refused.value) == "The image URL answered HTTP 302."


def test_the_request_names_the_host_and_the_product_and_keeps_the_query():
    seen = {}

    class Echo(BaseHTTPRequestHandler):
        def do_GET(self):
            seen.update(path=self.path, host=self.headers["Host"], agent=self.headers["User-Agent"])
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        assert fetch_url(f"http://localhost:{port}/a.jpg?w=1&h=2", LOCAL) == b"ok"
        assert seen == {"path": "/a.jpg?w=1&h=2", "host": f"localhost:{port}", "agent": "product-tagger/1.0"}
        assert fetch_url(f"http://localhost:{port}", LOCAL) == b"ok"
        assert seen["path"] == "/"
    finally:
        server.shutdown()
        server.server_close()


def test_an_unreachable_origin_and_a_bad_certificate_fail_the_item_with_a_sentence():
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with pytest.raises(BadInputError) as refused:
        fetch_url(f"http://127.0.0.1:{port}/a.jpg", LOCAL)
    assert str(refused.value) == "The image URL could not be reached."
    with FileServer() as server:  # plain HTTP where HTTPS was asked for: the TLS handshake fails
        server.add("/a.jpg", b"x")
        port = server.url.rsplit(":", 1)[1]
        with pytest.raises(BadInputError) as refused:
            fetch_url(f"https://127.0.0.1:{port}/a.jpg", LOCAL)
    assert str(refused.value) in ("The image URL's HTTPS certificate is not valid.", "The image URL could not be reached.")


# Addresses ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("address", ["224.0.0.1", "239.255.255.250", "ff02::1", "ff0e::1", "fe80::1%eth0", "::", "240.0.0.1"])
def test_multicast_unspecified_reserved_and_link_local_addresses_are_not_public(address):
    assert not is_public_address(address)


def test_a_public_address_with_a_zone_is_read_without_it():
    assert is_public_address("2606:4700:4700::1111%eth0")


def test_host_lookup_failures_and_duplicates():
    def fails(*args, **kwargs):
        raise socket.gaierror("no such host")

    with pytest.raises(BadInputError) as refused:
        check_public_address("nowhere.example", 80, allow_private=False, resolve=fails)
    assert str(refused.value) == "The image URL's host nowhere.example could not be found."
    with pytest.raises(BadInputError) as refused:
        check_public_address("empty.example", 80, allow_private=False, resolve=lambda *a, **k: [])
    assert str(refused.value) == "The image URL's host empty.example could not be found."
    seen = []

    def twice(host, port, type=0, **_):
        seen.append((host, port, type))
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port))] * 2

    assert check_public_address("cdn.example", 8080, allow_private=False, resolve=twice) == ["93.184.216.34"]
    assert seen == [("cdn.example", 8080, socket.SOCK_STREAM)]


# Staging -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("host, expected", [
    ("127.0.0.1", ["127.0.0.1"]), ("127.1", ["127.0.0.1"]), ("2130706433", ["127.0.0.1"]), ("::1", ["::1"]),
    ("cdn.example.com", None), ("", None),
])
def test_literal_addresses_are_read_without_dns(host, expected):
    assert literal_addresses(host, 80) == expected


@pytest.mark.parametrize("url, reason", [
    ("ftp://cdn.example.com/a.jpg", "Only http:// and https:// image URLs are allowed."),
    ("http:///a.jpg", "The image URL has no host name."),
    ("https://user:pw@cdn.example.com/a.jpg", "Image URLs with embedded credentials are not allowed."),
    ("https://user@cdn.example.com/a.jpg", "Image URLs with embedded credentials are not allowed."),
    ("http://cdn.example.com:99999/a.jpg", "The image URL is not valid (check its host and port)."),
    ("https://10.0.0.5:8443/a.jpg", PRIVATE.format("10.0.0.5")),
    ("https://[fe80::1]/a.jpg", PRIVATE.format("fe80::1")),
    ("https://93.184.216.34/a.jpg", None),
    ("http://cdn.example.com/a.jpg", None),
])
def test_what_staging_refuses_from_the_url_alone(url, reason):
    assert url_refusal(url, allow_private=False) == reason
    if reason is not None and "private" in reason:
        assert url_refusal(url, allow_private=True) is None  # ALLOW_PRIVATE_URLS


def test_staging_resolves_each_host_once_and_refuses_every_url_of_a_private_one():
    asked = []

    def resolve(host, port, type=0, **_):
        asked.append((host, port, type))
        address = {"intranet.example": "10.1.2.3", "cdn.example": "93.184.216.34"}[host]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    urls = ["http://intranet.example/a.jpg", "https://intranet.example:8443/b.jpg", "https://cdn.example/c.jpg",
            "http://10.0.0.9/d.jpg", "ftp://cdn.example/e.jpg", "https://cdn.example/c.jpg"]
    refused, unchecked = screen_urls(urls, False, resolve=resolve)
    assert refused == {
        "http://intranet.example/a.jpg": PRIVATE.format("intranet.example"),
        "https://intranet.example:8443/b.jpg": PRIVATE.format("intranet.example"),
        "http://10.0.0.9/d.jpg": PRIVATE.format("10.0.0.9"),
        "ftp://cdn.example/e.jpg": "Only http:// and https:// image URLs are allowed.",
    }
    assert unchecked == 0
    assert sorted(asked) == [("cdn.example", 443, socket.SOCK_STREAM), ("intranet.example", 80, socket.SOCK_STREAM)]
    asked.clear()
    refused, unchecked = screen_urls(urls, True, resolve=resolve)  # ALLOW_PRIVATE_URLS: only the scheme is refused
    assert refused == {"ftp://cdn.example/e.jpg": "Only http:// and https:// image URLs are allowed."} and asked == []


def test_staging_resolves_at_most_max_hosts_and_says_how_many_were_left():
    asked = []

    def resolve(host, port, type=0, **_):
        asked.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.1", port))]

    urls = [f"http://h{i}.example/a.jpg" for i in range(5)]
    refused, unchecked = screen_urls(urls, False, max_hosts=3, resolve=resolve)
    assert sorted(asked) == ["h0.example", "h1.example", "h2.example"]
    assert sorted(refused) == urls[:3] and unchecked == 2


def test_staging_does_not_refuse_a_host_that_answers_too_late():
    answer = threading.Event()

    def slow(host, port, type=0, **_):
        answer.wait(10)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.1", port))]

    try:
        refused, unchecked = screen_urls(["http://slow.example/a.jpg"], False, timeout_s=0.2, resolve=slow)
    finally:
        answer.set()
    assert (refused, unchecked) == ({}, 0)  # fetch checks it again when it downloads


def test_a_configured_prefix_keeps_its_own_letters():
    assert parse_s3_prefix("s3://bucket/XL/") == ("bucket", "XL")


def test_a_host_name_is_never_taken_for_a_literal_address():
    assert literal_addresses("localhost", 80) is None  # a name, even one the machine resolves: DNS decides


def test_an_ip_literal_early_in_the_list_does_not_end_the_screening():
    def resolve(host, port, type=0, **_):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.1.2.3", port))]

    refused, _ = screen_urls(["https://93.184.216.34/a.jpg", "http://intranet.example/b.jpg"], False, resolve=resolve)
    assert refused == {"http://intranet.example/b.jpg": PRIVATE.format("intranet.example")}


def test_staging_waits_for_answers_within_its_time_and_no_longer():
    import time

    released = threading.Event()

    def answers_soon(host, port, type=0, **_):  # answers once a timer fires, well inside the 30 s allowed
        released.wait(30)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.1.2.3", port))]

    timer = threading.Timer(0.2, released.set)
    timer.start()
    refused, _ = screen_urls(["http://intranet.example/a.jpg"], False, timeout_s=30, resolve=answers_soon)
    assert refused == {"http://intranet.example/a.jpg": PRIVATE.format("intranet.example")}

    hold = threading.Event()

    def never(host, port, type=0, **_):
        hold.wait(30)
        raise socket.gaierror("late")

    started = time.monotonic()
    try:
        refused, _ = screen_urls(["http://a.example/x.jpg", "http://b.example/y.jpg"], False, timeout_s=0.2, resolve=never)
        elapsed = time.monotonic() - started
        left = [t for t in threading.enumerate() if t.name == "stage-resolve"]
        assert left and all(t.daemon for t in left)  # left to their own timeouts; they never hold the process open
    finally:
        hold.set()
    assert refused == {} and elapsed < 1.5  # 0.2 s for both hosts together, not a second each


@pytest.mark.parametrize("status, code, missing", [
    (404, "NoSuchKey", True), (404, None, True), (404, "NotFound", True), (403, "AccessDenied", False), (500, "InternalError", False),
])
def test_a_result_not_written_yet_is_none_and_other_s3_errors_are_told(status, code, missing):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StatusS3)
    server.status, server.code = status, code  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = boto3.client("s3", region_name="us-east-1", endpoint_url=f"http://127.0.0.1:{server.server_address[1]}",
                              config=Config(retries={"max_attempts": 1}, s3={"addressing_style": "path"}))
        if missing:
            assert read_s3_object_if_exists(client, "s3://results/out/1.json") is None
        else:
            with pytest.raises(ServiceError) as refused:
                read_s3_object_if_exists(client, "s3://results/out/1.json")
            assert str(refused.value) == "A result could not be read from S3; try again."
    finally:
        server.shutdown()
        server.server_close()


def test_sizes_are_told_in_mebibytes_to_one_decimal(tmp_path):
    photo = tmp_path / "big.jpg"
    photo.write_bytes(b"x" * 1_101_112)  # 1.0501 MiB
    with pytest.raises(BadInputError) as refused:
        read_file(photo, MB)
    assert str(refused.value) == "The file is 1.1 MB; the limit is 1.0 MB."


def test_zip_members_are_read_by_reference(tmp_path):
    import zipfile

    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("a.jpg", b"first")
        zipped.writestr("dir/b.jpg", b"second")
    limits = FetchLimits(max_bytes=MB)
    assert read_source(SourceRef(kind="zip", location=str(archive), member="dir/b.jpg"), limits) == b"second"
    assert read_source(SourceRef(kind="zip", location=str(archive), member="a.jpg"), limits) == b"first"


@pytest.mark.parametrize("code, error, message", [
    ("NoSuchKey", BadInputError, "s3://uploads/a.jpg does not exist."),  # deleted between the size check and the read
    ("NotFound", BadInputError, "s3://uploads/a.jpg does not exist."),
    ("AccessDenied", BadInputError, "No permission to read s3://uploads/a.jpg."),
    ("SlowDown", ServiceError, "S3 could not return s3://uploads/a.jpg (SlowDown); try again later."),
])
def test_s3_read_errors_after_the_size_check_are_told_apart(code, error, message):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StatusS3)
    server.head_status, server.status, server.code = 200, 404 if "Not" in code else 403 if code == "AccessDenied" else 503, code  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = boto3.client("s3", region_name="us-east-1", endpoint_url=f"http://127.0.0.1:{server.server_address[1]}",
                              config=Config(retries={"max_attempts": 1}, s3={"addressing_style": "path"}))
        with pytest.raises(error) as refused:
            fetch_s3("s3://uploads/a.jpg", FetchLimits(max_bytes=MB, s3_allowed_buckets=("uploads",)), client)
        assert str(refused.value) == message
    finally:
        server.shutdown()
        server.server_close()


def test_a_body_that_stalls_or_breaks_off_fails_the_item_with_its_own_sentence():
    from support.servers import DripServer

    stalls = FetchLimits(max_bytes=MB, timeout_s=0.5, allow_private=True, deadline_s=60.0)
    with DripServer(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc", drip=b"", max_s=60) as origin:  # then silent
        with pytest.raises(BadInputError) as refused:
            fetch_url(origin.url + "/a.jpg", stalls)
    assert str(refused.value) == "The image URL stopped sending data (timed out)."
    with DripServer(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc", drip=b"", max_s=0) as origin:  # then hangs up
        with pytest.raises(BadInputError) as refused:
            fetch_url(origin.url + "/a.jpg", LOCAL)
    assert str(refused.value) == "The download from the image URL broke off."


def _self_signed(tmp_path, name: str):
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert_path, key_path


def test_https_connects_to_the_checked_address_but_sends_and_verifies_the_host_name(tmp_path, monkeypatch):
    import ssl

    image_cert, image_key = _self_signed(tmp_path, "images.test")
    other_cert, other_key = _self_signed(tmp_path, "default.test")
    trusted = tmp_path / "trusted.pem"
    trusted.write_bytes(image_cert.read_bytes() + other_cert.read_bytes())
    monkeypatch.setenv("SSL_CERT_FILE", str(trusted))  # these two are the only trusted roots
    by_name = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    by_name.load_cert_chain(image_cert, image_key)
    default = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    default.load_cert_chain(other_cert, other_key)

    def choose(sock, server_name, _context):  # like a CDN: the certificate follows the name sent (SNI)
        if server_name == "images.test":
            sock.context = by_name

    default.sni_callback = choose

    class Image(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "5")
            self.end_headers()
            self.wfile.write(b"image")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Image)
    server.socket = default.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    real = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **k: real("127.0.0.1" if host.endswith(".test") else host, *a, **k))
    try:
        assert fetch_url(f"https://images.test:{port}/a.jpg", LOCAL) == b"image"
        with pytest.raises(BadInputError) as refused:
            fetch_url(f"https://other.test:{port}/a.jpg", LOCAL)  # served default.test's certificate
        assert str(refused.value) == "The image URL's HTTPS certificate is not valid."
    finally:
        server.shutdown()
        server.server_close()


def test_a_resolver_left_behind_at_the_deadline_never_holds_the_process_open(monkeypatch):
    from pipeline.ingest.fetch import DownloadTimedOut

    hold = threading.Event()

    def hung(*args, **kwargs):
        hold.wait(30)
        raise socket.gaierror("late")

    monkeypatch.setattr(socket, "getaddrinfo", hung)
    try:
        with pytest.raises(DownloadTimedOut):
            fetch_url("http://hung-dns.example/a.jpg", FetchLimits(max_bytes=MB, deadline_s=0.3))
        left = [t for t in threading.enumerate() if t.name == "fetch-resolve"]
        assert left and all(t.daemon for t in left)
    finally:
        hold.set()


def test_keys_keep_their_own_letters():
    assert parse_s3_uri("s3://bucket/X") == ("bucket", "X")
    assert parse_s3_uri("s3://bucket/Xray.jpg") == ("bucket", "Xray.jpg")


def test_an_origin_that_never_answers_or_hangs_up_fails_the_item_with_its_own_sentence():
    from support.servers import DripServer

    quick = FetchLimits(max_bytes=MB, timeout_s=0.5, allow_private=True, deadline_s=60.0)
    with DripServer(b"", drip=b"", max_s=60) as origin:  # reads the request, then says nothing
        with pytest.raises(BadInputError) as refused:
            fetch_url(origin.url + "/a.jpg", quick)
    assert str(refused.value) == "The image URL did not answer in time."
    with DripServer(b"", drip=b"", max_s=0) as origin:  # reads the request, then hangs up
        with pytest.raises(BadInputError) as refused:
            fetch_url(origin.url + "/a.jpg", LOCAL)
    assert str(refused.value) == "The image URL could not be reached."


def test_the_download_watchdog_never_holds_the_process_open():
    from support.servers import DripServer

    from pipeline.ingest.fetch import DownloadCancelled

    stop = threading.Event()
    outcome = {}

    def download():
        try:
            fetch_url(origin.url + "/a.jpg", FetchLimits(max_bytes=MB, timeout_s=30, allow_private=True), should_stop=stop)
        except DownloadCancelled as exc:
            outcome["error"] = exc

    with DripServer(b"", drip=b"", max_s=60) as origin:
        worker = threading.Thread(target=download)
        worker.start()
        watchdogs: list[threading.Thread] = []
        for _ in range(400):  # the watchdog starts with the download
            watchdogs = [t for t in threading.enumerate() if t.name == "fetch-watchdog"]
            if watchdogs:
                break
            stop.wait(0.025)
        stop.set()
        worker.join(30)
    assert watchdogs and all(t.daemon for t in watchdogs)
    assert isinstance(outcome.get("error"), DownloadCancelled)


@pytest.mark.parametrize("url, reason", [
    ("ftp://cdn.example.com/a.jpg", "Only http:// and https:// image URLs are allowed."),
    ("http:///a.jpg", "The image URL has no host name."),
    ("http://user@cdn.example.com/a.jpg", "Image URLs with embedded credentials are not allowed."),
    ("http://:pw@cdn.example.com/a.jpg", "Image URLs with embedded credentials are not allowed."),
])
def test_fetch_refuses_with_the_same_sentence_as_staging(url, reason):
    with pytest.raises(BadInputError) as refused:
        fetch_url(url, FetchLimits(max_bytes=MB))
    assert str(refused.value) == reason == url_refusal(url, allow_private=False)


@pytest.mark.parametrize("url, port", [("https://images.example/a.jpg", 443), ("http://images.example/a.jpg", 80),
                                       ("https://images.example:8443/a.jpg", 8443)])
def test_the_host_is_resolved_for_the_port_the_download_will_use(monkeypatch, url, port):
    asked = []

    def resolve(host, port_asked, type=0, **_):
        asked.append((host, port_asked))
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.5", port_asked))]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    with pytest.raises(BadInputError, match="private or internal"):
        fetch_url(url, FetchLimits(max_bytes=MB))
    assert asked == [("images.example", port)]


def test_the_deadline_is_measured_on_the_given_clock():
    from pipeline.ingest.fetch import DownloadTimedOut

    with FileServer() as server:
        url = server.add("/a.jpg", b"image")
        late = iter([0.0] + [30.0] * 10_000)  # the deadline (30 s) is reached at once, to the second
        with pytest.raises(DownloadTimedOut):
            fetch_url(url, FetchLimits(max_bytes=MB, allow_private=True, deadline_s=30.0), clock=lambda: next(late))
        early = iter([0.0] + [29.0] * 10_000)
        assert fetch_url(url, FetchLimits(max_bytes=MB, allow_private=True, deadline_s=30.0), clock=lambda: next(early)) == b"image"


def test_an_error_with_time_left_is_reported_as_itself_not_as_the_deadline():
    with FileServer() as server:
        with pytest.raises(BadInputError) as refused:
            fetch_url(server.url + "/missing.jpg", FetchLimits(max_bytes=MB, allow_private=True, deadline_s=0.9))
    assert str(refused.value) == "The image URL answered HTTP 404."


def test_a_stop_seen_by_the_download_itself_is_a_cancellation():
    from pipeline.ingest.fetch import DownloadCancelled

    caller = threading.current_thread()
    with FileServer() as server:
        url = server.add("/a.jpg", b"image")
        with pytest.raises(DownloadCancelled):  # only the downloading thread sees the stop, not the watchdog
            fetch_url(url, FetchLimits(max_bytes=MB, allow_private=True), should_stop=lambda: threading.current_thread() is caller)
