"""The ``isr`` command: warm a cache, invalidate it, look at it.

    isr warm --base-url http://127.0.0.1:8000 /posts/hello /posts/world
    isr warm --base-url http://127.0.0.1:8000 --file paths.txt --concurrency 16
    isr invalidate --tag posts --mode revalidate              # on ISR_CACHE_URL's store
    isr invalidate --store redis://cache:6379/0 --key post:hello
    isr invalidate --webhook http://127.0.0.1:8000/hooks/isr --tag posts   # ISR_WEBHOOK_SECRET
    isr invalidate --webhook http://127.0.0.1:8000/hooks/isr --secret-file /run/secrets/isr ...
    isr stats --store disk:///var/cache/blog
    isr instances --store redis://cache:6379/0 --namespace blog     # or --json
    isr log --limit 20                                              # or --json
    isr explain --key post:hello                       # on ISR_CACHE_URL's store
    isr explain --url http://127.0.0.1:8000/posts/hello --app blog.app:rt --json
    isr --version

``warm`` requests each page once, as a visitor would, so the site's own cache fills (the
build-time warm-up of static sites, at run time); it reports what each answer's ``X-Cache``
said. Paths need ``--base-url``; full URLs do not. ``invalidate`` acts on a store directly
or asks a running webhook to (``--webhook``), which also purges the CDNs it knows of.
``stats`` shows a store's generation record and how many entries its namespace holds.
``instances`` lists the live instances sharing the store (`isr.ISR.instances`), ``log``
the latest invalidations with where they came from and their confirmations
(`isr.ISR.invalidation_log`): a table, or JSON with ``--json``. The command itself does not
register as an instance; its invalidations are logged as coming from ``"cli"``. After
invalidating on a store, ``invalidate`` waits (``--confirm``, 1 s by default; 0: not at
all) until every live instance has applied them (`isr.ISR.confirm`) and prints how many
confirmed and which did not; an instance missing is reported, not an error (exit 0).

``explain`` says what the store holds for a key now and what its next read will do and why
(`isr.ISR.explain`); ``--url`` requests the page first, shows its answer's ``X-Cache``,
``Age``, ``ETag`` and ``Cache-Control``, and explains the page's key.

**A page's key** (``explain --url``) is computed by the page cache's own rules
(`isr.asgi.ISRMiddleware.page_key`, with the request headers ``--header`` gives, sent with
the request too) when ``--app module:attr`` names the app's runtime
(an `isr.ISR`: every page middleware built on it is found) or a middleware; the app's
runtime is then the one explained, with its functions' and rules' windows, so its store
must be one the command can reach (not ``memory://``). Without ``--app`` the command
knows no rules: it takes ``page:{path}`` (a site with ``origin=``), else
``page:{scheme}://{host}{path}``, whichever the store holds, and says so; a rule that keys
query parameters or ``vary`` headers adds a hash to the key that only ``--app`` can
compute. The middleware sends no header naming the key, on purpose: nothing is added to
every answer for a diagnosis.

**The store** is the one ``--store`` names, else ``ISR_CACHE_URL``, else the one
``ISR_TARGET=single-host`` puts on disk (`isr.ISR.from_env`); with none of them the command
refuses to run (exit 2) rather than act on a memory store of its own, which no application
sees. For the same reason ``invalidate`` refuses a ``memory://`` store even when named, and
``stats`` on one says it is the command's own, empty store. The namespace is ``--namespace``,
else ``ISR_NAMESPACE``, else the default; the commands that act on a store name it, with
the store's URL (password redacted), on standard error. Before acting, the command waits
(``--wait``, 5 s by default) for the store to answer (`isr.ISR.wait_ready_sync`: a Redis
PING): a store it cannot reach (stopped, unreachable, a wrong password) is an error, exit 1,
not a report of zeros.

**Counting entries.** Memory: exact. Disk: exact, one indexed SQL count of the namespace's
unexpired entries. Redis: exact when the database holds at most ``--scan-limit`` keys (100,000
by default), by SCANning it for the namespace's entries; past that, estimated from 1,000
random keys (RANDOMKEY), with its 95 % interval, since a SCAN of millions of keys is costly
for a busy server. The output says which (``entries_counted``).

Exit status: 0 on success, 1 when something failed (a store or page that did not answer, an
invalidation that may be incomplete), 2 on bad usage (a missing store or base URL, an
unknown option, an extra that is not installed: the message says what to install).

**Secrets.** The webhook's secret comes from ``ISR_WEBHOOK_SECRET`` or ``--secret-file``
(its one trailing newline dropped; ``-`` reads standard input), the store's URL, password
included, from ``ISR_CACHE_URL``. ``--secret`` and a ``--store`` (or ``--webhook``) URL with
a password still work on the command line, with a warning: every local user can read a
command line (``ps``). A secret that cannot travel in a header (a control character, a
newline left inside) is refused without being shown, and nothing the command prints (its
errors, a webhook's answer) shows the secret or a URL's password: they are replaced by
``[redacted]``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.metadata
import json
import math
import os
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote, unquote, urlsplit

import anyio
import httpx

from ._coherence import Confirmation, LoggedInvalidation, invalidation_source
from ._config import url_from_env
from ._errors import ConfigError
from ._explain import Explanation
from ._http import PATH_SAFE, Edge, normalize_host
from ._redact import Redactor, check_header_value, redact_url, url_password
from ._runtime import ISR
from .adapters.base import Adapter
from .adapters.memory import MemoryAdapter
from .adapters.names import DEFAULT_NAMESPACE, prefix

__all__ = ["main"]


class Progress:
    """A one-line progress bar on a terminal; a line every 10 % otherwise (CI logs)."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.stream = stream
        self.tty = stream.isatty()
        self._last_decile = -1

    def step(self, note: str = "") -> None:
        self.done += 1
        share = self.done / self.total
        if self.tty:
            bar = "#" * int(share * 30)
            self.stream.write(f"\r[{bar:<30}] {self.done}/{self.total} {note[:40]:<40}")
            if self.done == self.total:
                self.stream.write("\n")
        elif int(share * 10) != self._last_decile:
            self._last_decile = int(share * 10)
            self.stream.write(f"{self.done}/{self.total} ({share:.0%})\n")
        self.stream.flush()


def _paths(args: argparse.Namespace) -> list[str]:
    paths = list(args.paths)
    if args.file:
        text = Path(args.file).read_text(encoding="utf-8")
        paths += [line.strip() for line in text.splitlines() if line.strip()]
    if not paths:
        raise ConfigError("nothing to warm: give paths (or URLs), or --file with one a line")
    if not args.base_url:
        relative = [path for path in paths if not path.startswith(("http://", "https://"))]
        if relative:
            raise ConfigError(
                f"{relative[0]!r} is a path, not a URL: give the site's address with --base-url "
                "(e.g. --base-url http://127.0.0.1:8000), or full URLs"
            )
    return paths


async def _warm(args: argparse.Namespace, out: TextIO, err: TextIO, redact: Redactor) -> int:
    paths = _paths(args)
    progress = Progress(len(paths), err)
    statuses: Counter[str] = Counter()
    failures: list[str] = []
    limiter = anyio.CapacityLimiter(args.concurrency)

    async def fetch(client: httpx.AsyncClient, path: str) -> None:
        async with limiter:
            try:
                response = await client.get(path)
                cache = response.headers.get("x-cache", "-")
                statuses[f"{response.status_code} {cache}"] += 1
                if response.status_code >= 400:
                    failures.append(f"{path}: HTTP {response.status_code}")
            except httpx.HTTPError as exc:
                statuses["error"] += 1
                failures.append(f"{path}: {type(exc).__name__}: {exc}")
            progress.step(path)

    started = time.monotonic()
    async with (
        httpx.AsyncClient(base_url=args.base_url or "", timeout=args.timeout) as client,
        anyio.create_task_group() as tg,
    ):
        for path in paths:
            tg.start_soon(fetch, client, path)
    took = time.monotonic() - started
    summary = ", ".join(f"{n} x {s}" for s, n in sorted(statuses.items()))
    out.write(f"warmed {len(paths)} pages in {took:.2f} s: {summary}\n")
    for failure in failures:
        out.write(redact(f"failed: {failure}") + "\n")
    return 1 if failures else 0


NO_STORE = (
    "no store named: give --store URL (disk:///var/cache/app, redis://host:6379/0), or set "
    "ISR_CACHE_URL (the place for a URL with a password), or ISR_TARGET=single-host for "
    "the per-user disk store. The isr command does not act on a memory store of its own: "
    "no application would see it"
)


class Unreachable(Exception):
    """The store did not answer within ``--wait`` seconds."""


def _store(args: argparse.Namespace, err: TextIO) -> ISR:
    """The runtime on the store the command acts on (see the module docstring), once it
    answers: `ConfigError` when none is named, `Unreachable` when it does not answer."""
    if args.store:
        url = args.store  # an explicit flag wins over ISR_TARGET
    else:
        url = url_from_env(os.environ)
        if url == "memory://" and not os.environ.get("ISR_CACHE_URL", "").strip():
            raise ConfigError(NO_STORE)
    if args.command == "explain" and url.startswith("memory:"):
        raise ConfigError(
            "memory:// lives inside one process: the isr command's own store holds nothing "
            "an application serves; name its disk or Redis store"
        )
    if args.command == "invalidate" and url.startswith("memory:"):
        raise ConfigError(
            "memory:// lives inside one process: invalidating the isr command's own, empty "
            "store changes nothing an application serves; name its disk or Redis store, or "
            "ask its webhook (--webhook)"
        )
    namespace = args.namespace or os.environ.get("ISR_NAMESPACE") or None
    runtime = ISR(url, namespace=namespace, heartbeat=None)  # a command is no instance
    shown = repr(namespace) if namespace else f"{DEFAULT_NAMESPACE!r} (the default)"
    err.write(f"isr: store {redact_url(url)}, namespace {shown}\n")
    if isinstance(runtime.adapter, MemoryAdapter):
        err.write("isr: note: memory:// is this command's own store: it starts empty\n")
    if not runtime.wait_ready_sync(args.wait):
        why = _why_unreachable(runtime.adapter)
        runtime.close()
        raise Unreachable(
            f"the store {redact_url(url)} did not answer within {args.wait:g} s{why}; is it "
            "running and reachable, and are its credentials right?"
        )
    return runtime


def _why_unreachable(adapter: Adapter) -> str:
    """What the server said to one more try (``: AuthenticationError: ...``), for a Redis
    store; nothing for another (`ISR.wait_ready_sync` tells only whether it answered)."""
    connect = getattr(adapter, "_connect", None)  # RedisAdapter's sync client
    if connect is None:
        return ""
    try:
        connect().ping()
    except Exception as exc:  # whatever redis-py raised: shown, never raised
        return f" ({type(exc).__name__}: {exc})"
    return ""


def _invalidate_webhook(args: argparse.Namespace, out: TextIO, redact: Redactor) -> int:
    body = {"tags": args.tag, "keys": args.key, "mode": args.mode}
    headers = {"Authorization": f"Bearer {args.secret}"} if args.secret else {}
    try:
        response = httpx.post(args.webhook, json=body, headers=headers, timeout=args.timeout)
    except httpx.HTTPError as exc:
        out.write(redact(f"the webhook did not answer: {type(exc).__name__}: {exc}") + "\n")
        return 1
    # A server that echoes the request (a debugging proxy) would echo the secret.
    out.write(redact(f"HTTP {response.status_code} {response.text}") + "\n")
    return 0 if response.is_success else 1


def _invalidate(args: argparse.Namespace, out: TextIO, err: TextIO, redact: Redactor) -> int:
    if not args.tag and not args.key and not args.all:
        raise ConfigError("say what to invalidate: --key, --tag (both repeatable) or --all")
    if not args.confirm >= 0:
        raise ConfigError("--confirm must be >= 0 seconds (0: do not wait)")
    if args.webhook:
        if args.all:
            raise ConfigError("--all is not something a webhook is asked for; use --store")
        return _invalidate_webhook(args, out, redact)
    runtime = _store(args, err)
    try:
        with invalidation_source("cli"):
            for key in args.key:
                found = runtime.invalidate_sync(key, args.mode)
                out.write(
                    f"key {key!r}: {'invalidated' if found else 'not cached'} ({args.mode})\n"
                )
            for tag in args.tag:
                count = runtime.invalidate_tag_sync(tag, args.mode)
                entries = f"{count} entr{'y' if count == 1 else 'ies'}"
                out.write(f"tag {tag!r}: {entries} ({args.mode})\n")
            if args.all:
                runtime.invalidate_all_sync(args.mode)
                out.write(f"everything ({args.mode})\n")
        if args.confirm > 0:
            done = runtime.confirm_sync(args.confirm)
            if done.confirmed or done.missing:
                out.write(f"instances: {len(done.confirmed)} confirmed in {done.ms:g} ms\n")
            else:
                out.write("instances: none live (nothing to confirm)\n")
            if done.missing:
                out.write(
                    f"instances missing (no confirmation within {args.confirm:g} s): "
                    f"{', '.join(done.missing)}\n"
                )
        errors = runtime.stats().store_errors
    finally:
        runtime.close()
    if errors:
        out.write(f"{errors} store error(s): see the log; the invalidation may be incomplete\n")
        return 1
    return 0


#: The response headers ``explain --url`` shows.
SHOWN_HEADERS = ("x-cache", "age", "etag", "cache-control", "x-cache-tags")


def _app(spec: str) -> tuple[ISR, list[Edge[Any]]]:
    """``module:attr`` (``--app``): the runtime it names (an `isr.ISR`, or a page
    middleware built on one) and the page middleware built on that runtime."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"--app takes module:attr (e.g. blog.app:rt), not {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as uvicorn and gunicorn find an app
    try:
        found: Any = importlib.import_module(module_name)
        for name in attr.split("."):
            found = getattr(found, name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"--app {spec}: {type(exc).__name__}: {exc}") from None
    if isinstance(found, Edge):
        runtime = found.runtime
    elif isinstance(found, ISR):
        runtime = found
    else:
        raise ConfigError(
            f"--app {spec} is a {type(found).__name__}: name the app's isr.ISR runtime or its "
            "isr.asgi / isr.wsgi ISRMiddleware"
        )
    if isinstance(runtime.adapter, MemoryAdapter):
        raise ConfigError(
            f"the runtime of --app {spec} keeps its cache in memory, inside the app's process, "
            "where no other process can look: explain pages on a disk or Redis store "
            "(ISR_CACHE_URL), or from inside the app (rt.explain, the status page)"
        )
    return runtime, sorted(runtime._edges, key=id)


def _guessed_keys(url: str) -> list[str]:
    """A page's possible keys without the app's rules: a site's with ``origin``, then one
    keying its scheme and host (`isr._http.Site.key`, no query or vary part)."""
    parts = urlsplit(url)
    path = quote(unquote(parts.path) or "/", safe=PATH_SAFE)
    keys = [f"page:{path}"]
    host = normalize_host(parts.netloc, parts.scheme)
    if host is not None:
        keys.append(f"page:{parts.scheme}://{host}{path}")
    return keys


def _explain(args: argparse.Namespace, out: TextIO, err: TextIO, redact: Redactor) -> int:
    if bool(args.key) == bool(args.url):
        raise ConfigError("say what to explain: --key KEY or --url URL (one of them)")
    if args.app and args.store:
        raise ConfigError("give --app (the app's runtime and store) or --store, not both")
    if args.url and urlsplit(args.url).scheme not in ("http", "https"):
        raise ConfigError(f"--url takes an http:// or https:// URL, not {redact(args.url)!r}")
    if args.header and not args.url:
        raise ConfigError("--header goes with --url")
    headers = _headers(args.header)
    if args.app:
        runtime, pages = _app(args.app)
        own = False
    else:
        runtime, pages, own = _store(args, err), [], True
    try:
        report: dict[str, Any] = {}
        lines: list[str] = []
        if args.url:
            try:
                response = httpx.get(args.url, headers=headers, timeout=args.timeout)
            except httpx.HTTPError as exc:
                why = f"{type(exc).__name__}: {exc}"
                raise Unreachable(f"{args.url} did not answer: {why}") from exc
            shown = {name: response.headers.get(name) for name in SHOWN_HEADERS}
            report |= {"url": args.url, "status": response.status_code, "headers": shown}
            lines.append(f"url         {args.url}")
            answer = ", ".join(f"{name}: {value}" for name, value in shown.items() if value)
            lines.append(f"answer      {response.status_code}; {answer or 'no cache headers'}")
            key, key_from = _url_key(args.url, headers, pages, runtime)
            report |= {"key": key, "key_from": key_from}
            if key is None:
                lines.append(f"page key    none: {key_from}")
                _report(out, args.json, report, lines)
                return 1
            lines.append(f"page key    {key} ({key_from})")
        else:
            key = args.key
        explained: Explanation = runtime.explain_sync(key)
        report["explanation"] = explained.as_json()
        lines.append(explained.text())
        _report(out, args.json, report, lines)
    finally:
        if own:
            runtime.close()
    return 0


def _headers(given: list[str]) -> dict[str, str]:
    """``--header "Name: value"`` (repeatable): the request headers of ``explain --url``."""
    headers: dict[str, str] = {}
    for item in given:
        name, colon, value = item.partition(":")
        name, value = name.strip(), value.strip()
        if not colon or not name or any(c in name for c in ' \t()<>@,;\\"/[]?={}'):
            raise ConfigError(f"--header takes 'Name: value', not {item!r}")
        check_header_value(value or "-", f"the value of --header {name}")
        headers[name] = value
    return headers


def _url_key(
    url: str, headers: dict[str, str], pages: list[Edge[Any]], runtime: ISR
) -> tuple[str | None, str]:
    """The page key of ``url`` requested with ``headers``, and how it was found."""
    if pages:
        for page in pages:
            key = page.page_key(url, headers)
            if key is not None:
                return key, "the app's page rules"
        return None, "no page rule of the app caches this URL (no rule matches, or it bypasses)"
    keys = _guessed_keys(url)
    for key in keys:
        if runtime.explain_sync(key).found:
            return key, "from the path, without the app's rules (--app): the one the store holds"
    note = "; with query parameters a rule may key, give --app" if urlsplit(url).query else ""
    return keys[0], f"from the path, without the app's rules (--app): not in the store{note}"


def _report(out: TextIO, as_json: bool, report: dict[str, Any], lines: list[str]) -> None:
    if as_json:
        out.write(json.dumps(report, indent=2, sort_keys=True) + "\n")
    else:
        out.write("\n".join(lines) + "\n")


def _stats(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    runtime = _store(args, err)
    try:
        namespace = args.namespace or os.environ.get("ISR_NAMESPACE") or None
        entries, counted = _count(runtime.adapter, namespace, args.scan_limit)
        stats = runtime.stats()
        report: dict[str, Any] = {
            "adapter": type(runtime.adapter).__name__,
            "namespace": namespace or DEFAULT_NAMESPACE,
            "generation": runtime.adapter.generation()._asdict(),
            "entries": entries,
            "entries_counted": counted,
            "store": stats.store,
        }
        errors = stats.store_errors
    finally:
        runtime.close()
    out.write(json.dumps(report, indent=2) + "\n")
    if errors:
        err.write(f"isr stats: {errors} store error(s) while reading: see the log\n")
        return 1
    return 0


def _instances(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    runtime = _store(args, err)
    try:
        found = runtime.instances_sync()
        now = runtime._now()
        errors = runtime.stats().store_errors
    finally:
        runtime.close()
    if args.json:
        out.write(json.dumps([dataclasses.asdict(i) for i in found], indent=2) + "\n")
    else:
        rows = [
            [
                i.id,
                i.host,
                str(i.pid),
                _when(i.started),
                f"{max(0.0, now - i.seen):.1f} s ago",
                "yes" if i.l1 else "no",
                "-" if i.applied is None else str(i.applied),
            ]
            for i in found
        ]
        _table(out, ["ID", "HOST", "PID", "STARTED (UTC)", "SEEN", "L1", "APPLIED"], rows)
        out.write(f"{len(found)} live instance{'' if len(found) == 1 else 's'}\n")
    if errors:
        err.write(f"isr instances: {errors} store error(s) while reading: see the log\n")
        return 1
    return 0


def _log(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.limit < 1:
        raise ConfigError("--limit must be a positive number")
    runtime = _store(args, err)
    try:
        found = runtime.invalidation_log_sync(args.limit)
        errors = runtime.stats().store_errors
    finally:
        runtime.close()
    if args.json:
        out.write(json.dumps([logged.as_json() for logged in found], indent=2) + "\n")
    else:
        rows = [
            [
                _when(logged.at),
                logged.scope if logged.scope == "all" else f"{logged.scope} {logged.name}",
                logged.mode,
                _source(logged),
                logged.instance,
                _confirmed(logged.confirmation),
            ]
            for logged in found
        ]
        _table(out, ["AT (UTC)", "WHAT", "MODE", "SOURCE", "INSTANCE", "CONFIRMED"], rows)
    if errors:
        err.write(f"isr log: {errors} store error(s) while reading: see the log\n")
        return 1
    return 0


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at))


def _source(logged: LoggedInvalidation) -> str:
    detail = " ".join(f"{k}={v}" for k, v in logged.detail.items())
    return f"{logged.source} {detail}" if detail else logged.source


def _confirmed(confirmation: Confirmation | None) -> str:
    if confirmation is None:
        return "-"
    total = len(confirmation.confirmed) + len(confirmation.missing)
    said = f"{len(confirmation.confirmed)}/{total} in {confirmation.ms:g} ms"
    if confirmation.missing:
        said += f"; missing {', '.join(confirmation.missing)}"
    return said


def _table(out: TextIO, header: list[str], rows: list[list[str]]) -> None:
    """``rows`` under ``header``, in columns as wide as their widest cell; the last
    column unpadded. Control characters (from a store's records) are shown as ``?``."""
    clean = [[_printable(cell) for cell in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in clean) for i in range(len(header) - 1)]
    for row in clean:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        out.write("  ".join([*cells, row[-1]]).rstrip() + "\n")


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)


#: RANDOMKEY samples behind a Redis estimate: a 95 % interval of about ±3 % of the database.
SAMPLES = 1000


def _count(adapter: Adapter, namespace: str | None, scan_limit: int) -> tuple[int | None, str]:
    """How many entries ``namespace`` holds in ``adapter``, and how that was found."""
    from .adapters.disk import DiskAdapter

    if isinstance(adapter, DiskAdapter):
        return _count_disk(adapter.directory, f"{prefix(namespace)}:e:"), "exact"
    if type(adapter).__name__ == "RedisAdapter":  # not imported: it needs the redis extra
        return _count_redis(adapter, f"{prefix(namespace)}:e:", scan_limit)
    size = adapter.size()
    if size is None:
        return None, "not known: this store does not say"
    return size, "exact"


def _count_disk(directory: str, start: str) -> int:
    """The unexpired entries named ``start...``: one count over diskcache's key index, on a
    read-only connection of our own (diskcache itself would count every namespace)."""
    from diskcache.core import DBNAME

    end = start[:-1] + chr(ord(start[-1]) + 1)  # the first name after every "ns:e:..."
    uri = f"file:{quote(os.path.join(directory, DBNAME))}?mode=ro"
    try:
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
            ((count,),) = db.execute(
                "SELECT COUNT(*) FROM Cache WHERE key >= ? AND key < ?"
                " AND (expire_time IS NULL OR expire_time > ?)",
                (start, end, time.time()),
            ).fetchall()
    except sqlite3.Error as exc:
        raise Unreachable(f"the disk store could not be counted: {exc}") from None
    return int(count)


def _count_redis(adapter: Adapter, start: str, scan_limit: int) -> tuple[int, str]:
    """Exact by SCAN up to ``scan_limit`` keys in the database; estimated by sampling past
    it (see the module docstring)."""
    from redis.exceptions import RedisError

    try:
        return _sample_redis(adapter, start, scan_limit)
    except (RedisError, OSError) as exc:
        raise Unreachable(
            f"the Redis store stopped answering while counting: {type(exc).__name__}: {exc}"
        ) from None


def _sample_redis(adapter: Adapter, start: str, scan_limit: int) -> tuple[int, str]:
    client: Any = adapter._connect()  # type: ignore[attr-defined]  # RedisAdapter's client
    size = int(client.dbsize())
    name = start.encode()
    if size <= scan_limit:
        pattern = b"".join(b"\\" + bytes([c]) if c in b"\\*?[]" else bytes([c]) for c in name)
        count = sum(1 for _ in client.scan_iter(match=pattern + b"*", count=1000))
        return count, f"exact: a SCAN of the database's {size} keys"
    if adapter.cluster:  # type: ignore[attr-defined]
        keys = [client.randomkey() for _ in range(SAMPLES)]
    else:
        pipe = client.pipeline(transaction=False)
        for _ in range(SAMPLES):
            pipe.randomkey()
        keys = pipe.execute()
    hits = sum(1 for key in keys if key is not None and bytes(key).startswith(name))
    low, high = _wilson(hits, SAMPLES)
    return round(size * hits / SAMPLES), (
        f"estimated: {hits} of {SAMPLES} random keys of the database's {size} are this "
        f"namespace's entries (95 % interval {math.floor(low * size)} to "
        f"{math.ceil(high * size)}); more than --scan-limit {scan_limit} keys to SCAN"
    )


def _wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``hits / n`` (sound at 0 and at n too)."""
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="isr",
        description="Warm an isr-runtime cache, invalidate it, look at it.",
        epilog="Secrets come from the environment: ISR_CACHE_URL (the store, password "
        "included), ISR_NAMESPACE, ISR_WEBHOOK_SECRET (or --secret-file). Given on the "
        "command line they work, with a warning: other local users can read it (ps). "
        "Exit status: 0 done, 1 failed (a store or page that did not answer), 2 bad usage.",
    )
    parser.add_argument("--version", action="version", version=f"isr-runtime {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)

    warm = commands.add_parser("warm", help="request pages so the site's cache fills")
    warm.add_argument("paths", nargs="*", help="paths (with --base-url) or full URLs")
    warm.add_argument(
        "--base-url", help="the site's address, e.g. http://127.0.0.1:8000 (needed for paths)"
    )
    warm.add_argument("--file", help="a file of paths or URLs, one a line")
    warm.add_argument("--concurrency", type=int, default=8)
    warm.add_argument("--timeout", type=float, default=30.0)

    def store_options(command: argparse.ArgumentParser) -> None:
        command.add_argument(
            "--store",
            help="a cache URL: disk:///path, redis://host:port/db (default: ISR_CACHE_URL, the "
            "place for one with a password: a command line is visible to every local user; "
            "else ISR_TARGET=single-host's disk store; with none of them, an error)",
        )
        command.add_argument("--namespace", help="default: ISR_NAMESPACE, else isr")
        command.add_argument(
            "--wait",
            type=float,
            default=5.0,
            metavar="SECONDS",
            help="how long the store may take to answer before the command fails (default 5)",
        )

    invalidate = commands.add_parser("invalidate", help="invalidate keys, tags or everything")
    invalidate.add_argument("--key", action="append", default=[])
    invalidate.add_argument("--tag", action="append", default=[])
    invalidate.add_argument("--all", action="store_true", help="everything (on a store)")
    invalidate.add_argument("--mode", choices=("expire", "revalidate", "purge"), default="expire")
    invalidate.add_argument("--webhook", help="a running webhook's URL, instead of a store")
    invalidate.add_argument(
        "--secret",
        help="the webhook's secret; better from the environment (ISR_WEBHOOK_SECRET, the "
        "default) or --secret-file: a command line is visible to every local user (ps)",
    )
    invalidate.add_argument(
        "--secret-file",
        metavar="PATH",
        help="read the webhook's secret from this file (one trailing newline dropped; - for "
        "standard input)",
    )
    invalidate.add_argument("--timeout", type=float, default=30.0)
    invalidate.add_argument(
        "--confirm",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="on a store: wait this long for every live instance to confirm it applied the "
        "invalidations, and say who did not (default 1; 0: do not wait)",
    )
    store_options(invalidate)

    instances = commands.add_parser(
        "instances", help="the live instances sharing a store (table, or --json)"
    )
    store_options(instances)
    instances.add_argument("--json", action="store_true", help="JSON instead of a table")

    log = commands.add_parser(
        "log", help="the latest invalidations, their sources and confirmations (or --json)"
    )
    store_options(log)
    log.add_argument("--limit", type=int, default=20, help="how many (default 20)")
    log.add_argument("--json", action="store_true", help="JSON instead of a table")

    stats = commands.add_parser("stats", help="a store's generation record and entry count")
    store_options(stats)
    stats.add_argument(
        "--scan-limit",
        type=int,
        default=100_000,
        metavar="KEYS",
        help="Redis: count exactly (SCAN) when the database holds at most this many keys, "
        "else estimate from a sample (default 100000)",
    )

    explain = commands.add_parser(
        "explain", help="what the cache holds for a key or page, and what the next read does"
    )
    explain.add_argument("--key", help="a cache key (post:hello, page:/posts/hello)")
    explain.add_argument("--url", help="a page's URL: requested, then its key explained")
    explain.add_argument(
        "--app",
        metavar="MODULE:ATTR",
        help="the app's isr.ISR runtime (or page middleware), e.g. blog.app:rt: its page "
        "rules give a URL's key, its functions the windows; explained on its store",
    )
    explain.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="a request header for --url (repeatable): a rule's vary headers shape the key",
    )
    explain.add_argument("--json", action="store_true", help="print JSON data")
    explain.add_argument("--timeout", type=float, default=30.0, help="for --url (seconds)")
    store_options(explain)
    return parser


def _version() -> str:
    """The installed distribution's version (``isr.__version__`` in a bare checkout)."""
    try:
        return importlib.metadata.version("isr-runtime")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - not installed
        from . import __version__

        return __version__


def _secret(args: argparse.Namespace, err: TextIO) -> str | None:
    """The webhook's secret: ``--secret`` (with a warning), ``--secret-file``, else
    ``ISR_WEBHOOK_SECRET``; checked as a header value, never shown."""
    if args.secret is not None and args.secret_file is not None:
        raise ConfigError("give --secret or --secret-file, not both")
    if args.secret is not None:
        _warn(err, "--secret", "ISR_WEBHOOK_SECRET or --secret-file")
        secret, where = args.secret, "--secret"
    elif args.secret_file is not None:
        if args.secret_file == "-":
            text = sys.stdin.read()
        else:
            text = Path(args.secret_file).read_text(encoding="utf-8")
        secret, where = text.removesuffix("\n").removesuffix("\r"), "the --secret-file"
    else:
        secret, where = os.environ.get("ISR_WEBHOOK_SECRET"), "ISR_WEBHOOK_SECRET"
    if secret is None:
        return None
    return check_header_value(secret, f"the secret in {where}", ascii_only=True)


def _warn(err: TextIO, flag: str, instead: str) -> None:
    err.write(
        f"isr: warning: {flag} on the command line can be read by every local user (ps, "
        f"/proc); use {instead} instead\n"
    )


def _credentials(args: argparse.Namespace) -> list[str | None]:
    """The passwords of the URLs the command was given (its own or the environment's)."""
    urls = [getattr(args, name, None) for name in ("store", "webhook", "base_url", "url")]
    urls.append(os.environ.get("ISR_CACHE_URL"))
    return [url_password(url) for url in urls if url]


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    """Run the ``isr`` command with ``argv`` (default: the process's arguments), writing its
    report to ``out`` and its messages to standard error; returns the exit status (see the
    module docstring). Bad arguments exit through argparse, with status 2."""
    args = _parser().parse_args(argv)
    err = sys.stderr
    redact = Redactor(_credentials(args))
    try:
        for flag in ("store", "webhook", "base-url"):
            url = getattr(args, flag.replace("-", "_"), None)
            if url and url_password(url):
                instead = "ISR_CACHE_URL" if flag == "store" else "a URL without it"
                _warn(err, f"a --{flag} URL with a password", instead)
        if args.command == "warm":
            return anyio.run(partial(_warm, args, out, err, redact))
        if args.command == "invalidate":
            if args.webhook:
                args.secret = _secret(args, err)
                redact = Redactor([*_credentials(args), args.secret])
            elif args.secret is not None or args.secret_file is not None:
                raise ConfigError("--secret and --secret-file go with --webhook")
            return _invalidate(args, out, err, redact)
        if args.command == "instances":
            return _instances(args, out, err)
        if args.command == "log":
            return _log(args, out, err)
        if args.command == "explain":
            return _explain(args, out, err, redact)
        return _stats(args, out, err)
    except Unreachable as exc:
        err.write(redact(f"isr {args.command}: {exc}") + "\n")
        return 1
    except ImportError as exc:
        if "pip install" not in str(exc):  # not a missing extra: a bug, shown in full
            raise
        err.write(f"isr {args.command}: {exc}\n")
        return 2
    except (ConfigError, OSError, ValueError) as exc:
        message = str(exc)
        if not isinstance(exc, ConfigError) and any(_credentials(args)):
            # urllib's own error about a URL it cannot parse (a password holding "/", "#"
            # or "?") quotes a piece of it, which no redaction can recognise.
            message = (
                f"{type(exc).__name__}: a URL could not be parsed (percent-encode a password "
                "holding /, # or ?)"
            )
        err.write(redact(f"isr {args.command}: {message}") + "\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
