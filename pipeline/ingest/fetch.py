"""Reading an image's bytes from where ingest found it: local file, zip member, http(s) URL, S3.

URL fetching is SSRF-safe: the host is resolved once, every address is checked, and the
connection goes to the checked address (so DNS rebinding cannot swap it afterwards). IPv6 forms
that carry an IPv4 address (IPv4-mapped `::ffff:a.b.c.d` however written, NAT64 `64:ff9b::/96`,
6to4 `2002::/16`, Teredo `2001::/32` server and client) are refused when that IPv4 would be; the
deprecated IPv4-compatible `::/96`, SIIT `::ffff:0:0:0/96` and local-use NAT64 `64:ff9b:1::/48`
are refused outright (no public host has one; where they route is up to local translators).

Every URL download has an overall deadline (`FetchLimits.deadline_s`, setting FETCH_DEADLINE_S):
name resolution, connect, TLS handshake, headers, body and every redirect together. A watchdog
thread shuts the connection's socket down when the deadline passes or the caller's `should_stop`
says so, which wakes a blocked read at once, so an origin that drips one byte at a time cannot hold
a worker: the item fails with one sentence (`DownloadTimedOut`), or `DownloadCancelled` is raised.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urljoin, urlsplit

import urllib3

from pipeline.errors import BadInputError, ConfigError, ServiceError, UserFacingError
from pipeline.ingest.zips import read_zip_entry
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
    deadline_s: float = 30.0  # a whole URL download, redirects included (FETCH_DEADLINE_S)


class DownloadTimedOut(BadInputError):
    """A URL download ran past its overall deadline (`FetchLimits.deadline_s`)."""


class DownloadCancelled(UserFacingError):
    """The caller's `should_stop` asked for the download to end (e.g. the batch's Stop)."""

    def __init__(self) -> None:
        super().__init__("The download was stopped before it finished.")


class _HasIsSet(Protocol):
    def is_set(self) -> bool: ...


# `should_stop`: a threading.Event (anything with is_set()) or a no-argument callable; true = stop.
ShouldStop = Callable[[], bool] | _HasIsSet | None
WATCH_INTERVAL_S = 0.05  # how often `should_stop` is polled while a download runs
CONNECT_GRACE_S = 0.25  # a TCP connect may end this long after the deadline (it cannot be woken)


def read_source(
    ref: SourceRef, limits: FetchLimits, s3_client_factory: Callable[[], Any] | None = None, *, should_stop: ShouldStop = None
) -> bytes:
    """The raw bytes behind a SourceRef, never more than `limits.max_bytes`.

    `should_stop` (threading.Event or callable) cancels a URL download in progress within about
    WATCH_INTERVAL_S (DownloadCancelled); for other sources it is checked before reading."""
    if ref.kind == "url":
        return fetch_url(ref.location, limits, should_stop=should_stop)
    if _stop_requested(should_stop):
        raise DownloadCancelled()
    if ref.kind == "file":
        return read_file(Path(ref.location), limits.max_bytes)
    if ref.kind == "zip":
        return read_zip_member(Path(ref.location), ref.member or "", limits)
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
    """Stream one member by its reference (each copy of a repeated name is its own) from a zip kept open."""
    return read_zip_entry(zip_path, member, max_bytes=limits.max_bytes, max_ratio=limits.zip_max_ratio)


_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # deprecated (RFC 4291); includes :: and ::1
_IPV4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")  # SIIT (RFC 2765)
_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052: IPv4 in the last 32 bits
_NAT64_LOCAL_USE = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215: operator-chosen layout
_TEREDO = ipaddress.IPv6Network("2001::/32")
_ALWAYS_REFUSED_V6 = (_IPV4_COMPATIBLE, _IPV4_TRANSLATED, _NAT64_LOCAL_USE)


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (mapped, NAT64, 6to4, Teredo server and client)."""
    found: list[ipaddress.IPv4Address] = []
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if ip in _NAT64_WELL_KNOWN or ip in _IPV4_COMPATIBLE or ip in _IPV4_TRANSLATED:
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip in _TEREDO and ip.teredo is not None:
        found.extend(ip.teredo)
    return found


def is_public_address(address: str) -> bool:
    """Whether an image may be fetched from `address` (an IP literal; an IPv6 zone is ignored)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if not ip.is_global or ip.is_multicast:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        if any(ip in network for network in _ALWAYS_REFUSED_V6):
            return False
        return all(is_public_address(str(v4)) for v4 in embedded_ipv4(ip))
    return True


def check_public_address(host: str, port: int, allow_private: bool, *, resolve: Callable[..., Any] | None = None) -> list[str]:
    """Resolve `host` and refuse it if *any* address is private, loopback, link-local or reserved.

    `resolve` stands in for `socket.getaddrinfo` (tests)."""
    resolve = resolve or socket.getaddrinfo
    try:
        infos = resolve(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise BadInputError(f"The image URL's host {host} could not be found.") from exc
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    if not addresses:
        raise BadInputError(f"The image URL's host {host} could not be found.")
    if not allow_private:
        for address in addresses:
            if not is_public_address(address):
                raise BadInputError(f"The image URL points to a private or internal address ({host}); only public web addresses are allowed.")
    return addresses


def _stop_requested(should_stop: ShouldStop) -> bool:
    if should_stop is None:
        return False
    is_set = getattr(should_stop, "is_set", None)
    return bool(is_set() if callable(is_set) else should_stop())  # type: ignore[operator]


class _Watchdog:
    """Ends one download at its deadline or when `should_stop` says so, whatever the origin does.

    Each socket the download opens is registered as a duplicate descriptor (ours until `finish`, so
    it can never name someone else's socket); firing shuts that socket down, which wakes a read
    blocked in connect's TLS handshake, the headers or the body at once."""

    def __init__(self, deadline_s: float, should_stop: ShouldStop, clock: Callable[[], float] = time.monotonic) -> None:
        self.deadline_s, self.should_stop, self.clock = deadline_s, should_stop, clock
        self.deadline = clock() + deadline_s
        self.reason: str | None = None  # "deadline" or "stopped" once fired
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="fetch-watchdog", daemon=True)
        self._thread.start()

    def remaining(self) -> float:
        return self.deadline - self.clock()

    def _due(self) -> str | None:
        if self.reason is not None:
            return self.reason
        if _stop_requested(self.should_stop):
            return "stopped"
        if self.remaining() <= 0:
            return "deadline"
        return None

    def _watch(self) -> None:
        while True:
            reason = self._due()
            if reason is not None:
                self._fire(reason)
                return
            interval = WATCH_INTERVAL_S if self.should_stop is not None else max(self.remaining(), 0.001)
            if self._done.wait(min(interval, max(self.remaining(), 0.001))):
                return

    def _fire(self, reason: str) -> None:
        with self._lock:
            if self._done.is_set():
                return
            self.reason = self.reason or reason
            for sock in self._sockets:
                _shutdown(sock)

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            if self._done.is_set():
                return
            duplicate = sock.dup()
            self._sockets.append(duplicate)
            if self.reason is not None:
                _shutdown(duplicate)

    def check(self) -> None:
        """Raise if the download must end now (between steps and between reads)."""
        reason = self._due()
        if reason is not None:
            self._fire(reason)
            raise self.error()

    def error(self) -> UserFacingError:
        if self.reason == "stopped":
            return DownloadCancelled()
        return DownloadTimedOut(f"The image URL did not finish downloading within {self.deadline_s:g} seconds; the item was skipped.")

    def finish(self) -> None:
        with self._lock:
            self._done.set()
            for sock in self._sockets:
                try:
                    sock.close()
                except OSError:
                    pass
            self._sockets.clear()


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _bounded(watchdog: _Watchdog, work: Callable[[], Any]) -> Any:
    """Run `work` (name resolution, which no socket shutdown can interrupt) within the deadline.

    On timeout or stop the helper thread is left to finish on its own (the resolver's own timeouts
    end it) and its answer is dropped."""
    outcome: dict[str, Any] = {}
    finished = threading.Event()

    def run() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, who re-raises it
            outcome["error"] = exc
        finally:
            finished.set()

    threading.Thread(target=run, name="fetch-resolve", daemon=True).start()
    while not finished.wait(min(WATCH_INTERVAL_S, max(watchdog.remaining(), 0.001))):
        watchdog.check()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def fetch_url(url: str, limits: FetchLimits, *, should_stop: ShouldStop = None, clock: Callable[[], float] = time.monotonic) -> bytes:
    """The bytes at an http(s) URL, SSRF-checked, within `limits.deadline_s` overall.

    `should_stop`: a threading.Event or a no-argument callable; once it is true the download ends
    within about WATCH_INTERVAL_S with DownloadCancelled (a blocked read is woken). `clock` is the
    monotonic clock the deadline is measured with (tests)."""
    watchdog = _Watchdog(limits.deadline_s, should_stop, clock)
    try:
        return _fetch_within(url, limits, watchdog)
    except Exception:
        if watchdog.reason is None and watchdog.remaining() <= 0:
            watchdog.reason = "deadline"  # e.g. a connect that timed out at the deadline
        if watchdog.reason is not None:  # whatever broke, it broke because the watchdog shut it
            raise watchdog.error() from None
        raise
    finally:
        watchdog.finish()


def _fetch_within(url: str, limits: FetchLimits, watchdog: _Watchdog) -> bytes:
    for _ in range(MAX_REDIRECTS + 1):
        watchdog.check()
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise BadInputError("Only http:// and https:// image URLs are allowed.")
        if not parts.hostname:
            raise BadInputError("The image URL has no host name.")
        if parts.username or parts.password:
            raise BadInputError("Image URLs with embedded credentials are not allowed.")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        hostname = parts.hostname
        address = _bounded(watchdog, lambda host=hostname, port=port: check_public_address(host, port, limits.allow_private))[0]
        pool, response = _request(parts, address, port, limits, watchdog)
        try:
            watchdog.check()
            if response.status in (301, 302, 303, 307, 308) and response.headers.get("Location"):
                url = urljoin(url, response.headers["Location"])
                continue
            if response.status != 200:
                raise BadInputError(f"The image URL answered HTTP {response.status}.")
            data = _read_limited(response, limits.max_bytes, watchdog)
            watchdog.check()  # a shut-down socket can look like the end of a body without a length
            return data
        finally:
            response.release_conn()
            pool.close()
    raise BadInputError("The image URL redirects too many times.")


def _watched(connection_class: type, watchdog: _Watchdog) -> type:
    """`connection_class`, registering every socket it opens with `watchdog`."""

    class Watched(connection_class):  # type: ignore[misc, valid-type]
        def _new_conn(self):
            sock = super()._new_conn()
            watchdog.watch(sock)
            return sock

    return Watched


def _request(parts, address: str, port: int, limits: FetchLimits, watchdog: _Watchdog):
    # The read timeout stays per read: the watchdog ends the download at the deadline. The connect
    # (no socket to shut down yet) may not outlast the deadline by more than a moment.
    left = max(watchdog.remaining(), 0.0) + CONNECT_GRACE_S
    timeout = urllib3.Timeout(connect=min(limits.timeout_s, left), read=limits.timeout_s)
    common = dict(host=address, port=port, timeout=timeout, retries=False, maxsize=1)
    if parts.scheme == "https":
        # Connect to the checked IP but verify the certificate and send SNI for the real host name.
        pool = urllib3.HTTPSConnectionPool(**common, server_hostname=parts.hostname, assert_hostname=parts.hostname, cert_reqs="CERT_REQUIRED")
    else:
        pool = urllib3.HTTPConnectionPool(**common)
    pool.ConnectionCls = _watched(pool.ConnectionCls, watchdog)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    host_header = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
    try:
        response = pool.urlopen("GET", path, headers={"Host": host_header, "User-Agent": "product-tagger/1.0"}, preload_content=False, redirect=False)
    except urllib3.exceptions.NewConnectionError as exc:  # a refused connection (urllib3 files it under timeouts)
        pool.close()
        raise BadInputError("The image URL could not be reached.") from exc
    except urllib3.exceptions.TimeoutError as exc:
        pool.close()
        raise BadInputError("The image URL did not answer in time.") from exc
    except urllib3.exceptions.SSLError as exc:
        pool.close()
        raise BadInputError("The image URL's HTTPS certificate is not valid.") from exc
    except urllib3.exceptions.HTTPError as exc:
        pool.close()
        raise BadInputError("The image URL could not be reached.") from exc
    return pool, response


def _read_limited(response: urllib3.BaseHTTPResponse, max_bytes: int, watchdog: _Watchdog) -> bytes:
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise BadInputError(f"The image at that URL is {_mb(int(declared))}; the limit is {_mb(max_bytes)}.")
    chunks, total = [], 0
    try:
        for chunk in response.stream(CHUNK):
            watchdog.check()
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


# --- Staging (before a batch is recorded): refuse what fetch_url would certainly refuse, cheaply.

STAGING_MAX_HOSTS = 20  # distinct host names resolved at staging; the rest are checked when fetched
STAGING_RESOLVE_S = 2.0  # all of those resolutions together (in parallel); unanswered ones are checked when fetched


def private_address_refusal(host: str) -> str:
    """The sentence fetch_url fails an item with when `host` is private or internal."""
    return f"The image URL points to a private or internal address ({host}); only public web addresses are allowed."


def literal_addresses(host: str, port: int) -> list[str] | None:
    """The addresses `host` stands for when it is an IP literal in any form getaddrinfo reads as one
    (`127.0.0.1`, `127.1`, `0x7f.1`, `2130706433`, `::1`, `fe80::1%eth0`), found without DNS; None for a name."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except (socket.gaierror, UnicodeError, ValueError):
        return None
    return list(dict.fromkeys(info[4][0] for info in infos)) or None


def url_refusal(url: str, allow_private: bool) -> str | None:
    """Why fetch_url would refuse `url`, told from its text alone: scheme, host, credentials, port and,
    unless `allow_private`, an IP-literal host. None when only resolving its host name can tell."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return "The image URL is not valid (check its host and port)."
    if parts.scheme not in ("http", "https"):
        return "Only http:// and https:// image URLs are allowed."
    if not parts.hostname:
        return "The image URL has no host name."
    if parts.username or parts.password:
        return "Image URLs with embedded credentials are not allowed."
    if allow_private:
        return None
    addresses = literal_addresses(parts.hostname, port)
    if addresses is not None and not all(is_public_address(address) for address in addresses):
        return private_address_refusal(parts.hostname)
    return None


def screen_urls(
    urls: list[str], allow_private: bool, *, max_hosts: int = STAGING_MAX_HOSTS, timeout_s: float = STAGING_RESOLVE_S,
    resolve: Callable[..., Any] | None = None,
) -> tuple[dict[str, str], int]:
    """Staging's URL check: {url: why fetch would refuse it} for the URLs that are certainly refused,
    and how many distinct host names were left for fetch to check.

    The same rules as fetch_url (`url_refusal`, then every resolved address through
    `is_public_address`). Only the first `max_hosts` distinct host names are resolved, in parallel,
    within `timeout_s` altogether; a name that does not resolve (or not in time) is not refused here:
    fetch checks it again, as it checks every URL. `resolve` stands in for socket.getaddrinfo (tests)."""
    refused: dict[str, str] = {}
    by_host: dict[str, list[str]] = {}
    ports: dict[str, int] = {}
    for url in dict.fromkeys(urls):
        reason = url_refusal(url, allow_private)
        if reason:
            refused[url] = reason
            continue
        if allow_private:
            continue
        parts = urlsplit(url)
        host = parts.hostname or ""
        if literal_addresses(host, 80) is not None:
            continue  # an IP literal: url_refusal decided it
        by_host.setdefault(host, []).append(url)
        ports.setdefault(host, parts.port or (443 if parts.scheme == "https" else 80))
    hosts = list(by_host)[:max_hosts]
    answers = _resolve_all(hosts, ports, timeout_s, resolve or socket.getaddrinfo)
    for host, addresses in answers.items():
        if addresses and not all(is_public_address(address) for address in addresses):
            for url in by_host[host]:
                refused[url] = private_address_refusal(host)
    return refused, len(by_host) - len(hosts)


def _resolve_all(hosts: list[str], ports: dict[str, int], timeout_s: float, resolve: Callable[..., Any]) -> dict[str, list[str]]:
    """{host: its addresses} for the hosts that resolved within `timeout_s` (all at once, daemon threads:
    a resolver that hangs is left to its own timeout and its answer dropped)."""
    answers: dict[str, list[str]] = {}

    def one(host: str) -> None:
        try:
            infos = resolve(host, ports[host], type=socket.SOCK_STREAM)
            answers[host] = list(dict.fromkeys(info[4][0] for info in infos))
        except Exception:  # noqa: BLE001 - not found / no network: fetch decides later
            pass

    threads = [threading.Thread(target=one, args=(host,), name="stage-resolve", daemon=True) for host in hosts]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout_s
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return dict(answers)
