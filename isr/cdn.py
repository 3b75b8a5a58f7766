"""Purge downstream caches by tag after a local invalidation: Varnish (xkey), Fastly
(surrogate keys) and Cloudflare (cache tags).

    purger = FastlyPurger(service_id, api_token)
    result = await purger.purge(["posts", "post:hello"], soft=True)
    result.ok, result.failed, result.error

A purge never raises for a failed request: every failure (refused, timed out, 5xx or 429
after the retries, a tag the CDN cannot hold) comes back in the `PurgeResult`, is counted
in ``stats()`` and logged on the ``isr`` logger. Transient failures (connection errors,
timeouts, 5xx, 429) are retried with exponential backoff; a ``Retry-After`` is honoured,
unless it asks for longer than ``max_backoff``, in which case the purge fails at once
rather than hold the caller (a webhook answering a CMS) that long.

**Tags** go out encoded by `isr._tags.encode_tag`, the encoding the page middleware's tag
headers use: ``item:a b`` is sent as the one key ``item:a%20b``, which is what the page
carries, so every page can be purged by its own tag whatever its path holds. A tag is
refused (reported as failed, the others purged) only when it cannot be encoded (not
Unicode text: a lone surrogate) or its encoded form is over the CDN's limit for one key
(Fastly and Cloudflare: 1024 bytes; Varnish: ``max_chars``, the purge header's budget).
`PurgeResult` names the tags as they were given.

**Credentials** (Fastly's and Cloudflare's tokens, the values of ``headers=``, a Varnish
URL's ``user:password@``) are checked when the purger is built: a control character (a
token read from a file with its newline) or surrounding whitespace is an `isr.ConfigError`
that does not show the value. A Varnish URL's credentials are sent as an
``Authorization: Basic`` header and kept out of the URL, so that httpx's own log lines (at
INFO) never show them. No error text carries a credential: an error answer's body is not
echoed but cut to a short excerpt with the request's own credential values, and anything
shaped like a credential (``Authorization:``, ``Cookie:``, ``…-Token:`` / ``…-Key:`` lines or
fields, ``Bearer …``, a URL's password), replaced by ``[redacted]`` (`isr._redact`). A
request that httpx refuses to send (a malformed header) is not retried.

Each purger owns an ``httpx.AsyncClient`` (created on first use, closed by ``aclose()`` or
``async with``) unless one is passed as ``client=``, which it then leaves open.
"""

from __future__ import annotations

import base64
import logging
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol, runtime_checkable
from urllib.parse import quote

import anyio
import httpx
from typing_extensions import Self

from isr._errors import ConfigError
from isr._httpdate import http_date
from isr._redact import Redactor, check_header_name, check_header_value, url_password
from isr._tags import encode_tag

__all__ = [
    "CloudflarePurger",
    "FastlyPurger",
    "PurgeResult",
    "Purger",
    "VarnishPurger",
]

logger = logging.getLogger("isr")


@dataclass(frozen=True)
class PurgeResult:
    """What one `Purger.purge` call did: the tags purged, the tags that failed and why."""

    purger: str
    soft: bool
    """Whether the purge was soft (marked stale) rather than hard; False where the CDN has
    no soft purge even if one was asked for (Cloudflare)."""
    purged: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()
    error: str | None = None
    """Why the tags in ``failed`` failed (the errors of several batches joined by "; ")."""
    requests: int = field(default=0, compare=False)
    """HTTP requests sent, retries included."""

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_json(self) -> dict[str, Any]:
        return {
            "purger": self.purger,
            "ok": self.ok,
            "soft": self.soft,
            "purged": list(self.purged),
            "failed": list(self.failed),
            "error": self.error,
        }


@runtime_checkable
class Purger(Protocol):
    """Anything that can purge a downstream cache by tag. ``soft=True`` asks to mark the
    tagged objects stale (served while refetched) rather than remove them."""

    name: str

    async def purge(self, tags: Sequence[str], *, soft: bool = False) -> PurgeResult: ...

    def stats(self) -> dict[str, int]:
        """Counters: at least ``purged`` (requests that succeeded) and ``failed``
        (requests that failed after their retries)."""
        ...


class _Failure(Exception):
    """One batch failed: ``transient`` if retrying later might help."""

    def __init__(self, message: str, *, transient: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.transient = transient
        self.retry_after = retry_after
        self.attempts = 1


class _TokenBucket:
    """``rate`` requests a second on average, up to ``burst`` at once. A caller reserves
    its token before awaiting, so concurrent callers queue up without a lock."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    async def take(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= 1.0
        if self.tokens < 0:
            await anyio.sleep(-self.tokens / self.rate)


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), if valid."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        when = http_date(value)
        if when is None:
            return None
        seconds = when - time.time()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _encoded(tag: object, most: int) -> tuple[str | None, str | None]:
    """(the tag as sent, None), or (None, why it cannot be sent)."""
    if not isinstance(tag, str) or not tag:
        return None, f"not a non-empty string: {tag!r:.80}"
    try:
        sent = encode_tag(tag)
    except UnicodeEncodeError:
        return None, f"tag {tag!r:.80} is not valid Unicode text"
    if len(sent) > most:
        return None, f"tag {tag[:40]!r}... is longer than {most} bytes encoded"
    return sent, None


class _HTTPPurger:
    """The common part of the HTTP purgers: batching, retries with exponential backoff,
    ``Retry-After``, a per-request timeout, an optional token-bucket rate limit, counters
    and logging, and ``headers`` sent with every purge request (a proxy's token, say; the
    purge's own tag and credential headers win over one of the same name). Subclasses say
    how a batch of tags becomes a request."""

    name: str
    max_batch: int = 256
    """Most tags in one request."""
    max_chars: int = 4000
    """Most bytes of encoded tags (with separators) in one request."""
    max_tag: int = 1024
    """Most bytes of one encoded tag."""

    def __init__(
        self,
        *,
        name: str,
        timeout: float = 5.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 10.0,
        rate: float | None = None,
        burst: int = 1,
        headers: Mapping[str, str] | None = None,
        client: httpx.AsyncClient | None = None,
        secrets: Sequence[str] = (),
    ) -> None:
        given = dict(headers or {})
        for header, value in given.items():
            check_header_name(header, f"{name}: headers=")
            check_header_value(value, f"{name}: the value of header {header!r}")
        for header, value in client.headers.items() if client is not None else ():
            check_header_value(value, f"{name}: the value of the client's header {header!r}")
        if not timeout > 0:
            raise ConfigError("timeout must be > 0 seconds")
        if not isinstance(retries, int) or retries < 0:
            raise ConfigError("retries must be an integer >= 0")
        if not (backoff >= 0 and max_backoff >= backoff):
            raise ConfigError("backoff must be >= 0 and max_backoff >= backoff")
        if rate is not None and not rate > 0:
            raise ConfigError("rate must be > 0 requests a second, or None for no limit")
        if not isinstance(burst, int) or burst < 1:
            raise ConfigError("burst must be an integer >= 1")
        self.name = name
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.headers = given
        self._redact = Redactor([*given.values(), *secrets])
        self._bucket = _TokenBucket(rate, burst) if rate is not None else None
        self._client = client
        self._own_client = client is None
        self._counts = {"purged": 0, "failed": 0, "retries": 0}

    # -------------------------------------------------------------- lifecycle

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(follow_redirects=False)
        return self._client

    async def aclose(self) -> None:
        """Close the HTTP client the purger made (a client passed in is left open)."""
        client = self._client
        if client is not None and self._own_client:
            self._client = None
            await client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def stats(self) -> dict[str, int]:
        """``purged``: requests that succeeded; ``failed``: requests that failed for good
        (after their retries); ``retries``: attempts repeated after a transient failure."""
        return dict(self._counts)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    def _headers(self, own: Mapping[str, str | bytes]) -> list[tuple[bytes, bytes]]:
        """A request's headers: the ``headers`` the purger was given, then ``own`` (the
        purge's: its tags, its credentials), which win over a given header of the same name
        in any case."""
        names = {name.lower() for name in own}
        given = {k: v for k, v in self.headers.items() if k.lower() not in names}
        return _headers({**given, **own})

    # -------------------------------------------------------------- subclass hooks

    def _soft(self, soft: bool) -> bool:
        """Whether a purge asked to be ``soft`` is done soft."""
        return soft

    def _request(self, keys: Sequence[str], soft: bool) -> httpx.Request:
        """The request purging ``keys`` (tags as encoded for the wire)."""
        raise NotImplementedError

    def _check(self, response: httpx.Response) -> None:
        """Raise `_Failure` if a 2xx answer still says the purge failed."""

    # -------------------------------------------------------------- purging

    def _batches(self, tags: Sequence[tuple[str, str]]) -> Iterator[list[tuple[str, str]]]:
        """``(tag, key)`` pairs in batches of at most ``max_batch`` keys and ``max_chars``
        bytes of keys (the encoded keys are ASCII: a character is a byte)."""
        batch: list[tuple[str, str]] = []
        chars = 0
        for tag, key in tags:
            size = len(key)
            if batch and (len(batch) >= self.max_batch or chars + 1 + size > self.max_chars):
                yield batch
                batch, chars = [], 0
            batch.append((tag, key))
            chars += size + (1 if chars else 0)
        if batch:
            yield batch

    async def purge(self, tags: Sequence[str], *, soft: bool = False) -> PurgeResult:
        """Purge the objects carrying any of ``tags``; never raises for a failed request."""
        soft = self._soft(soft)
        unique = list(dict.fromkeys(tags)) if not isinstance(tags, str) else [tags]
        failed: list[str] = []
        errors: list[str] = []
        sendable: list[tuple[str, str]] = []
        for tag in unique:
            key, reason = _encoded(tag, min(self.max_tag, self.max_chars))
            if key is not None:
                sendable.append((tag, key))
            else:
                failed.append(str(tag))
                errors.append(self._redact(str(reason)))
        purged: list[str] = []
        requests = 0
        give_up: str | None = None
        for pairs in self._batches(sendable):
            batch = [tag for tag, _ in pairs]
            if give_up is not None:
                failed.extend(batch)
                continue
            try:
                requests += await self._send([key for _, key in pairs], soft)
            except _Failure as failure:
                requests += failure.attempts
                failed.extend(batch)
                errors.append(failure.message)
                self._counts["failed"] += 1
                if failure.transient:
                    # The CDN is down or throttling: the later batches would only add their
                    # retries to the wait. Report them as failed with the same reason.
                    give_up = failure.message
            else:
                purged.extend(batch)
                self._counts["purged"] += 1
        error = "; ".join(dict.fromkeys(errors)) or None
        if failed:
            logger.error(
                "cdn purge %s: %d of %d tag(s) failed (%s): %s",
                self.name,
                len(failed),
                len(unique),
                " ".join(failed[:10]) + (" ..." if len(failed) > 10 else ""),
                error,
            )
        return PurgeResult(self.name, soft, tuple(purged), tuple(failed), error, requests=requests)

    async def _send(self, keys: Sequence[str], soft: bool) -> int:
        """Send one batch with its retries; return the number of requests sent, or raise
        the last `_Failure` (with ``attempts`` set)."""
        attempt = 0
        while True:
            attempt += 1
            try:
                await self._attempt(keys, soft)
                return attempt
            except _Failure as failure:
                failure.attempts = attempt
                if not failure.transient:
                    raise
                if attempt > self.retries:
                    failure.message += f" (after {attempt} attempt{'s' if attempt > 1 else ''})"
                    raise
                delay = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
                if failure.retry_after is not None:
                    if failure.retry_after > self.max_backoff:
                        failure.message += (
                            f" (Retry-After {failure.retry_after:g} s is longer than "
                            f"max_backoff={self.max_backoff:g} s)"
                        )
                        raise
                    delay = max(delay, failure.retry_after)
                self._counts["retries"] += 1
                logger.warning(
                    "cdn purge %s: %s; retry %d of %d in %.2f s",
                    self.name,
                    failure.message,
                    attempt,
                    self.retries,
                    delay,
                )
                await anyio.sleep(delay)

    async def _attempt(self, keys: Sequence[str], soft: bool) -> None:
        if self._bucket is not None:
            await self._bucket.take()
        request = self._request(keys, soft)
        request.extensions["timeout"] = httpx.Timeout(self.timeout).as_dict()
        try:
            response = await self._http().send(request)
        except httpx.TimeoutException as exc:
            raise _Failure(
                f"{type(exc).__name__}: no answer within {self.timeout:g} s", transient=True
            ) from None
        except (httpx.LocalProtocolError, httpx.UnsupportedProtocol) as exc:
            # httpx refused to send what we built (its message quotes the offending header
            # or URL): no retry can mend it, and its text is not repeated.
            raise _Failure(
                f"{type(exc).__name__}: the request could not be sent (a malformed header or URL)",
                transient=False,
            ) from None
        except httpx.TransportError as exc:
            raise _Failure(self._redact(f"{type(exc).__name__}: {exc}"), transient=True) from None
        status = response.status_code
        if 200 <= status < 300:
            self._check(response)
            return
        text = self._redact.excerpt(response.text) if response.content else ""
        message = f"HTTP {status} {response.reason_phrase}" + (f": {text}" if text else "")
        # Worth retrying: throttled, timed out, or a server error that may pass (not 501
        # Not Implemented, 505 HTTP Version Not Supported).
        transient = status in (408, 429) or (status >= 500 and status not in (501, 505))
        retry_after = _retry_after(response.headers.get("retry-after")) if transient else None
        raise _Failure(message, transient=transient, retry_after=retry_after)


def _checked_url(purger: str, url: str) -> tuple[str, tuple[str, str] | None]:
    """(``url`` without its userinfo, (user, password) or None) if ``url`` is an http(s) URL
    with a host; else a ConfigError at construction (not an exception out of `purge`, nor
    retries of what can never succeed: ``varnish:6081``) that shows no password."""
    shown = Redactor([url_password(url)])(url)
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        raise ConfigError(f"{purger}: {shown!r} is not a URL") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigError(f"{purger}: {shown!r} is not an http:// or https:// URL with a host")
    if not parsed.userinfo:
        return url, None
    credentials = (parsed.username, parsed.password)
    for part, what in zip(credentials, ("user", "password"), strict=True):
        if part:
            check_header_value(part, f"{purger}: the URL's {what}")
    return str(parsed.copy_with(username=None, password=None)), credentials


def _headers(headers: Mapping[str, str | bytes]) -> list[tuple[bytes, bytes]]:
    # Bytes, UTF-8: httpx encodes a str header value as ASCII and would refuse "café".
    return [
        (name.encode(), value if isinstance(value, bytes) else value.encode())
        for name, value in headers.items()
    ]


def _api_url(purger: str, url: str) -> str:
    """`_checked_url` for a CDN's API, which authenticates by its token: a URL with
    credentials of its own is a mistake (and would be logged by httpx)."""
    checked, credentials = _checked_url(purger, url)
    if credentials is not None:
        raise ConfigError(f"{purger}: base_url must not hold credentials; the token is sent")
    return checked


def _header_value(keys: Sequence[str]) -> bytes:
    return " ".join(keys).encode()


class VarnishPurger(_HTTPPurger):
    """Purge a Varnish with the xkey vmod: ``PURGE <url>`` with ``xkey: tag1 tag2`` (hard)
    or ``xkey-softpurge: tag1 tag2`` (soft: the objects go stale and are refetched while
    their grace lasts). The VCL to match is ``tests/varnish.vcl``: it answers 200 to a
    purge from an allowed address, 403 otherwise.

    A URL with credentials (``http://user:password@varnish:6081/``, for a proxy in front of
    Varnish) is sent with them as ``Authorization: Basic``, and they never appear in the
    URL the purger keeps or logs (``purger.url``)."""

    max_batch = 10_000
    max_chars = 4000  # well under Varnish's http_req_hdr_len (8 KiB)
    max_tag = 4000

    def __init__(
        self,
        url: str,
        *,
        name: str = "varnish",
        method: str = "PURGE",
        timeout: float = 5.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 10.0,
        rate: float | None = None,
        burst: int = 1,
        headers: Mapping[str, str] | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.url, credentials = _checked_url(name, url)
        self._auth: dict[str, str] = {}
        secrets: list[str] = []
        if credentials is not None:
            if any(k.lower() == "authorization" for k in headers or {}):
                raise ConfigError(
                    f"{name}: credentials in the URL and an Authorization header: give one"
                )
            user, password = credentials
            basic = base64.b64encode(f"{user}:{password}".encode()).decode()
            self._auth["Authorization"] = f"Basic {basic}"
            secrets += [password, basic]
        super().__init__(
            name=name,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            max_backoff=max_backoff,
            rate=rate,
            burst=burst,
            headers=headers,
            client=client,
            secrets=secrets,
        )
        self.method = check_header_name(method, f"{name}: method")

    def _request(self, keys: Sequence[str], soft: bool) -> httpx.Request:
        header = "xkey-softpurge" if soft else "xkey"
        headers = self._headers({**self._auth, header: _header_value(keys)})
        return self._http().build_request(self.method, self.url, headers=headers)


class FastlyPurger(_HTTPPurger):
    """Purge a Fastly service by surrogate key: ``POST /service/{id}/purge`` with
    ``Surrogate-Key: tag1 tag2`` (up to 256 keys a request), ``Fastly-Key: <token>``, and
    ``Fastly-Soft-Purge: 1`` for a soft purge (objects marked stale, not removed)."""

    max_batch = 256
    max_chars = 8000

    def __init__(
        self,
        service_id: str,
        api_token: str,
        *,
        base_url: str = "https://api.fastly.com",
        name: str = "fastly",
        timeout: float = 5.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 10.0,
        rate: float | None = None,
        burst: int = 1,
        headers: Mapping[str, str] | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        if not service_id or not api_token:
            raise ConfigError("FastlyPurger needs a service_id and an api_token")
        check_header_value(api_token, f"{name}: api_token", ascii_only=True)
        super().__init__(
            name=name,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            max_backoff=max_backoff,
            rate=rate,
            burst=burst,
            headers=headers,
            client=client,
            secrets=[api_token],
        )
        service = quote(service_id, safe="")
        self.url = _api_url(name, f"{base_url.rstrip('/')}/service/{service}/purge")
        self._token = api_token

    def _request(self, keys: Sequence[str], soft: bool) -> httpx.Request:
        headers: dict[str, str | bytes] = {
            "Fastly-Key": self._token,
            "Accept": "application/json",
            "Surrogate-Key": _header_value(keys),
        }
        if soft:
            headers["Fastly-Soft-Purge"] = "1"
        return self._http().build_request("POST", self.url, headers=self._headers(headers))


class CloudflarePurger(_HTTPPurger):
    """Purge a Cloudflare zone by cache tag: ``POST /zones/{zone}/purge_cache`` with
    ``{"tags": [...]}``, at most 100 tags a request (Cloudflare's limit).

    Cloudflare has no soft purge: a soft purge is done hard (the result says
    ``soft=False``). Cloudflare rate-limits purges with a token bucket per account (Free:
    5 requests a minute, bucket 25; Pro: 5 a second, bucket 25; Business: 10 a second, 50;
    Enterprise: 50 a second, 500); ``rate`` (requests a second) and ``burst`` keep under
    it. The defaults fit Pro; on Free pass ``rate=5 / 60``."""

    max_batch = 100
    max_chars = 1_000_000

    def __init__(
        self,
        zone_id: str,
        api_token: str,
        *,
        base_url: str = "https://api.cloudflare.com/client/v4",
        batch: int = 100,
        rate: float | None = 5.0,
        burst: int = 25,
        name: str = "cloudflare",
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 10.0,
        headers: Mapping[str, str] | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        if not zone_id or not api_token:
            raise ConfigError("CloudflarePurger needs a zone_id and an api_token")
        if not isinstance(batch, int) or not 1 <= batch <= 100:
            raise ConfigError("batch must be between 1 and 100 tags (Cloudflare's limit)")
        check_header_value(api_token, f"{name}: api_token", ascii_only=True)
        super().__init__(
            name=name,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            max_backoff=max_backoff,
            rate=rate,
            burst=burst,
            headers=headers,
            client=client,
            secrets=[api_token],
        )
        self.max_batch = batch
        zone = quote(zone_id, safe="")
        self.url = _api_url(name, f"{base_url.rstrip('/')}/zones/{zone}/purge_cache")
        self._token = api_token

    def _soft(self, soft: bool) -> bool:
        return False

    def _request(self, keys: Sequence[str], soft: bool) -> httpx.Request:
        return self._http().build_request(
            "POST",
            self.url,
            headers=self._headers({"Authorization": f"Bearer {self._token}"}),
            json={"tags": list(keys)},
        )

    def _check(self, response: httpx.Response) -> None:
        try:
            answer = response.json()
        except ValueError:
            return
        if isinstance(answer, dict) and answer.get("success") is False:
            errors = answer.get("errors") or []
            detail = "; ".join(
                str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in errors
            )
            raise _Failure(
                "Cloudflare refused the purge: "
                + (self._redact.excerpt(detail) if detail else "success: false"),
                transient=False,
            )
