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

Tags travel in space-separated headers (Varnish, Fastly) or as a JSON list whose entries
the CDN also splits (Cloudflare), so a tag with whitespace, a comma or a control character
cannot be sent: it is reported as failed, the others are purged.

Each purger owns an ``httpx.AsyncClient`` (created on first use, closed by ``aclose()`` or
``async with``) unless one is passed as ``client=``, which it then leaves open.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

import anyio
import httpx
from typing_extensions import Self

from isr._errors import ConfigError
from isr._httpdate import http_date

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


def _unsendable(tag: object) -> str | None:
    if not isinstance(tag, str) or not tag:
        return f"not a non-empty string: {tag!r}"
    if any(c.isspace() or c == "," or ord(c) < 0x20 or ord(c) == 0x7F for c in tag):
        return f"tag {tag!r:.80} has whitespace, a comma or a control character"
    try:
        tag.encode()
    except UnicodeEncodeError:
        return f"tag {tag!r:.80} is not valid Unicode text"
    return None


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
    """Most bytes of tags (UTF-8, with separators) in one request."""

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
    ) -> None:
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
        self.headers = dict(headers or {})
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

    def _unsendable(self, tag: object) -> str | None:
        return _unsendable(tag)

    def _request(self, tags: Sequence[str], soft: bool) -> httpx.Request:
        raise NotImplementedError

    def _check(self, response: httpx.Response) -> None:
        """Raise `_Failure` if a 2xx answer still says the purge failed."""

    # -------------------------------------------------------------- purging

    def _batches(self, tags: Sequence[str]) -> Iterator[list[str]]:
        batch: list[str] = []
        chars = 0
        for tag in tags:
            size = len(tag.encode())
            if batch and (len(batch) >= self.max_batch or chars + 1 + size > self.max_chars):
                yield batch
                batch, chars = [], 0
            batch.append(tag)
            chars += size + (1 if chars else 0)
        if batch:
            yield batch

    async def purge(self, tags: Sequence[str], *, soft: bool = False) -> PurgeResult:
        """Purge the objects carrying any of ``tags``; never raises for a failed request."""
        soft = self._soft(soft)
        unique = list(dict.fromkeys(tags)) if not isinstance(tags, str) else [tags]
        failed: list[str] = []
        errors: list[str] = []
        sendable: list[str] = []
        for tag in unique:
            reason = self._unsendable(tag)
            if reason is None:
                sendable.append(tag)
            else:
                failed.append(str(tag))
                errors.append(reason)
        purged: list[str] = []
        requests = 0
        give_up: str | None = None
        for batch in self._batches(sendable):
            if give_up is not None:
                failed.extend(batch)
                continue
            try:
                requests += await self._send(batch, soft)
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

    async def _send(self, tags: Sequence[str], soft: bool) -> int:
        """Send one batch with its retries; return the number of requests sent, or raise
        the last `_Failure` (with ``attempts`` set)."""
        attempt = 0
        while True:
            attempt += 1
            try:
                await self._attempt(tags, soft)
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

    async def _attempt(self, tags: Sequence[str], soft: bool) -> None:
        if self._bucket is not None:
            await self._bucket.take()
        request = self._request(tags, soft)
        request.extensions["timeout"] = httpx.Timeout(self.timeout).as_dict()
        try:
            response = await self._http().send(request)
        except httpx.TimeoutException as exc:
            raise _Failure(
                f"{type(exc).__name__}: no answer within {self.timeout:g} s", transient=True
            ) from None
        except httpx.TransportError as exc:
            raise _Failure(f"{type(exc).__name__}: {exc}", transient=True) from None
        status = response.status_code
        if 200 <= status < 300:
            self._check(response)
            return
        text = response.text.strip().replace("\n", " ")[:200]
        message = f"HTTP {status} {response.reason_phrase}" + (f": {text}" if text else "")
        # Worth retrying: throttled, timed out, or a server error that may pass (not 501
        # Not Implemented, 505 HTTP Version Not Supported).
        transient = status in (408, 429) or (status >= 500 and status not in (501, 505))
        retry_after = _retry_after(response.headers.get("retry-after")) if transient else None
        raise _Failure(message, transient=transient, retry_after=retry_after)


def _checked_url(purger: str, url: str) -> str:
    """``url`` if it is an http(s) URL with a host; else a ConfigError at construction, not
    an exception out of `purge` (a malformed URL) or retries of what can never succeed
    (no scheme: ``varnish:6081``)."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ConfigError(f"{purger}: {url!r} is not a URL ({exc})") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigError(f"{purger}: {url!r} is not an http:// or https:// URL with a host")
    return url


def _headers(headers: Mapping[str, str | bytes]) -> list[tuple[bytes, bytes]]:
    # Bytes, UTF-8: httpx encodes a str header value as ASCII and would refuse "café".
    return [
        (name.encode(), value if isinstance(value, bytes) else value.encode())
        for name, value in headers.items()
    ]


def _header_value(tags: Sequence[str]) -> bytes:
    return " ".join(tags).encode()


class VarnishPurger(_HTTPPurger):
    """Purge a Varnish with the xkey vmod: ``PURGE <url>`` with ``xkey: tag1 tag2`` (hard)
    or ``xkey-softpurge: tag1 tag2`` (soft: the objects go stale and are refetched while
    their grace lasts). The VCL to match is ``tests/varnish.vcl``: it answers 200 to a
    purge from an allowed address, 403 otherwise."""

    max_batch = 10_000
    max_chars = 4000  # well under Varnish's http_req_hdr_len (8 KiB)

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
        )
        self.url = _checked_url(name, url)
        self.method = method

    def _request(self, tags: Sequence[str], soft: bool) -> httpx.Request:
        header = "xkey-softpurge" if soft else "xkey"
        headers = self._headers({header: _header_value(tags)})
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
        )
        self.url = _checked_url(name, f"{base_url.rstrip('/')}/service/{service_id}/purge")
        self._token = api_token

    def _request(self, tags: Sequence[str], soft: bool) -> httpx.Request:
        headers: dict[str, str | bytes] = {
            "Fastly-Key": self._token,
            "Accept": "application/json",
            "Surrogate-Key": _header_value(tags),
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
        )
        self.max_batch = batch
        self.url = _checked_url(name, f"{base_url.rstrip('/')}/zones/{zone_id}/purge_cache")
        self._token = api_token

    def _soft(self, soft: bool) -> bool:
        return False

    def _unsendable(self, tag: object) -> str | None:
        reason = _unsendable(tag)
        if reason is None and isinstance(tag, str) and len(tag.encode()) > 1024:
            return f"tag {tag[:40]!r}... is longer than Cloudflare's 1024 bytes"
        return reason

    def _request(self, tags: Sequence[str], soft: bool) -> httpx.Request:
        return self._http().build_request(
            "POST",
            self.url,
            headers=self._headers({"Authorization": f"Bearer {self._token}"}),
            json={"tags": list(tags)},
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
                f"Cloudflare refused the purge: {detail or 'success: false'}", transient=False
            )
