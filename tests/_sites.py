"""The site every framework test serves: a post per slug, a streamed feed and a login that
sets a cookie. ``version`` is bumped to publish; ``calls`` records each path rendered."""

from __future__ import annotations

from collections.abc import Mapping


class Site:
    def __init__(self) -> None:
        self.version = 1
        self.calls: list[str] = []

    def post(self, path: str, slug: str) -> str:
        self.calls.append(path)
        return f"post {slug} v{self.version}"

    def feed(self, path: str) -> list[bytes]:
        self.calls.append(path)
        return [f"item {n} v{self.version}\n".encode() for n in range(3)]

    def echo(self, url: str, headers: Mapping[str, str]) -> str:
        """A page printing its own URL and request headers, as a careless app does (its
        canonical link, a greeting in the reader's language): what poisoning would show."""
        self.calls.append(url)
        lang, agent = headers.get("accept-language", "-"), headers.get("user-agent", "-")
        return f"url={url} lang={lang} ua={agent}"

    def login(self, path: str) -> str:
        self.calls.append(path)
        return "welcome"
