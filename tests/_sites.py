"""The site every framework test serves: a post per slug, a streamed feed and a login that
sets a cookie. ``version`` is bumped to publish; ``calls`` records each path rendered."""

from __future__ import annotations


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

    def login(self, path: str) -> str:
        self.calls.append(path)
        return "welcome"
