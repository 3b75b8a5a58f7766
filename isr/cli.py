"""The ``isr`` command: warm a cache, invalidate it, look at it.

    isr warm --base-url http://127.0.0.1:8000 /posts/hello /posts/world
    isr warm --base-url http://127.0.0.1:8000 --file paths.txt --concurrency 16
    isr invalidate --tag posts --mode revalidate              # on ISR_CACHE_URL's store
    isr invalidate --store redis://cache:6379/0 --key post:hello
    isr invalidate --webhook http://127.0.0.1:8000/hooks/isr --tag posts   # ISR_WEBHOOK_SECRET
    isr invalidate --webhook http://127.0.0.1:8000/hooks/isr --secret-file /run/secrets/isr ...
    isr stats --store disk:///var/cache/blog

``warm`` requests each page once, as a visitor would, so the site's own cache fills (the
build-time warm-up of static sites, at run time); it reports what each answer's ``X-Cache``
said. ``invalidate`` acts on a store directly (``--store``, else ``ISR_CACHE_URL``, with
``--namespace`` or ``ISR_NAMESPACE``) or asks a running webhook to (``--webhook``), which
also purges the CDNs it knows of. Exit status: 0 on success, 1 when something failed, 2 on
bad usage.

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
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any, TextIO

import anyio
import httpx

from ._errors import ConfigError
from ._redact import Redactor, check_header_value, url_password
from ._runtime import ISR

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


def _store(args: argparse.Namespace) -> ISR:
    """The store ``--store`` names (whatever ``ISR_TARGET`` says: an explicit flag wins),
    else the environment's, as `ISR.from_env` reads it; ``--namespace``, else
    ``ISR_NAMESPACE``."""
    if not args.store:
        return ISR.from_env(**({"namespace": args.namespace} if args.namespace else {}))
    return ISR(args.store, namespace=args.namespace or os.environ.get("ISR_NAMESPACE") or None)


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


def _invalidate(args: argparse.Namespace, out: TextIO, redact: Redactor) -> int:
    if not args.tag and not args.key and not args.all:
        raise ConfigError("say what to invalidate: --key, --tag (both repeatable) or --all")
    if args.webhook:
        if args.all:
            raise ConfigError("--all is not something a webhook is asked for; use --store")
        return _invalidate_webhook(args, out, redact)
    runtime = _store(args)
    try:
        for key in args.key:
            found = runtime.invalidate_sync(key, args.mode)
            out.write(f"key {key!r}: {'invalidated' if found else 'not cached'} ({args.mode})\n")
        for tag in args.tag:
            count = runtime.invalidate_tag_sync(tag, args.mode)
            out.write(f"tag {tag!r}: {count} entr{'y' if count == 1 else 'ies'} ({args.mode})\n")
        if args.all:
            runtime.invalidate_all_sync(args.mode)
            out.write(f"everything ({args.mode})\n")
        errors = runtime.stats().store_errors
    finally:
        runtime.close()
    if errors:
        out.write(f"{errors} store error(s): see the log; the invalidation may be incomplete\n")
        return 1
    return 0


def _stats(args: argparse.Namespace, out: TextIO) -> int:
    runtime = _store(args)
    try:
        stats = runtime.stats()
        report: dict[str, Any] = {
            "adapter": type(runtime.adapter).__name__,
            "generation": runtime.adapter.generation()._asdict(),
            "entries": stats.entries,
            "store": stats.store,
        }
    finally:
        runtime.close()
    out.write(json.dumps(report, indent=2) + "\n")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="isr",
        description="Warm an isr-runtime cache, invalidate it, look at it.",
        epilog="Secrets come from the environment: ISR_CACHE_URL (the store, password "
        "included), ISR_NAMESPACE, ISR_WEBHOOK_SECRET (or --secret-file). Given on the "
        "command line they work, with a warning: other local users can read it (ps).",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    warm = commands.add_parser("warm", help="request pages so the site's cache fills")
    warm.add_argument("paths", nargs="*", help="paths (with --base-url) or full URLs")
    warm.add_argument("--base-url", help="e.g. http://127.0.0.1:8000")
    warm.add_argument("--file", help="a file of paths or URLs, one a line")
    warm.add_argument("--concurrency", type=int, default=8)
    warm.add_argument("--timeout", type=float, default=30.0)

    def store_options(command: argparse.ArgumentParser) -> None:
        command.add_argument(
            "--store",
            help="a cache URL (default: ISR_CACHE_URL, the place for one with a password: a "
            "command line is visible to every local user)",
        )
        command.add_argument("--namespace", help="default: ISR_NAMESPACE")

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
    store_options(invalidate)

    stats = commands.add_parser("stats", help="a store's generation record and size")
    store_options(stats)
    return parser


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
    urls = [getattr(args, name, None) for name in ("store", "webhook", "base_url")]
    urls.append(os.environ.get("ISR_CACHE_URL"))
    return [url_password(url) for url in urls if url]


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
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
            return _invalidate(args, out, redact)
        return _stats(args, out)
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
