"""A captured signed webhook delivery is accepted once, by every replica and restart sharing
the runtime's store, within its window: two webhooks on two runtimes (and two processes)
over one real Redis, and over one disk directory."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

import isr
from isr.cdn import PurgeResult
from isr.webhook import Webhook, sign

from .conftest import FakeClock
from .redis_server import RedisServer, free_port

HKEY = "the webhook's hmac key"
NOW = 1_700_000_000
BODY = b'{"tags": ["posts"], "mode": "expire"}'
SHARED = ("disk", "redis", "redis-l1")


@pytest.fixture(params=SHARED)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def url(kind: str, tmp_path: Path, redis_server: RedisServer) -> str:
    return f"disk://{tmp_path / 'cache'}" if kind == "disk" else redis_server.url


@pytest.fixture
def ns() -> str:
    return f"hook-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(float(NOW))


class Purger:
    """Purges nothing; fails while ``fail`` is set."""

    name = "cdn"

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    async def purge(self, tags: Sequence[str], *, soft: bool = False) -> PurgeResult:
        if self.fail:
            return PurgeResult(self.name, soft, failed=tuple(tags), error="HTTP 503")
        return PurgeResult(self.name, soft, tuple(tags))

    def stats(self) -> dict[str, int]:
        return {}


def headers(timestamp: int = NOW) -> dict[str, str]:
    return {"content-type": "application/json", **sign(BODY, HKEY, timestamp=timestamp)}


@pytest.fixture
async def replicas(url: str, ns: str, kind: str) -> AsyncIterator[list[isr.ISR]]:
    made = [isr.ISR(url, namespace=ns, l1=kind == "redis-l1") for _ in range(2)]
    yield made
    for rt in made:
        await rt.aclose()


@pytest.mark.anyio
async def test_a_delivery_is_accepted_once_across_replicas_and_restarts(
    replicas: list[isr.ISR], url: str, ns: str, kind: str, clock: FakeClock
) -> None:
    a, b = (Webhook(runtime=rt, hmac_secret=HKEY, clock=clock) for rt in replicas)
    assert (await a.handle(headers(), BODY)).status == 200
    replay = await b.handle(headers(), BODY)  # the other replica
    assert (replay.status, replay.body["error"]) == (401, "signature already used (replay)")
    restarted = isr.ISR(url, namespace=ns, l1=kind == "redis-l1")
    try:
        again = await Webhook(runtime=restarted, hmac_secret=HKEY, clock=clock).handle(
            headers(), BODY
        )
        assert again.status == 401  # a restart forgets nothing
    finally:
        await restarted.aclose()
    other = isr.ISR(url, namespace=f"{ns}-other")  # another application on the store
    try:
        theirs = await Webhook(runtime=other, hmac_secret=HKEY, clock=clock).handle(headers(), BODY)
        assert theirs.status == 200  # its own guard: its namespace's claims
    finally:
        await other.aclose()


@pytest.mark.anyio
async def test_a_5xx_answer_gives_the_delivery_back_to_every_replica(
    replicas: list[isr.ISR], clock: FakeClock
) -> None:
    down = Purger(fail=True)
    a = Webhook(runtime=replicas[0], hmac_secret=HKEY, clock=clock, purgers=[down])
    b = Webhook(runtime=replicas[1], hmac_secret=HKEY, clock=clock, purgers=[Purger()])
    assert (await a.handle(headers(), BODY)).status == 502
    assert (await b.handle(headers(), BODY)).status == 200  # the sender's retry, elsewhere
    assert (await a.handle(headers(), BODY)).status == 401  # answered: spent everywhere


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # redis-py's asyncio client
async def test_a_store_that_cannot_be_asked_is_a_503_and_changes_nothing(
    clock: FakeClock,
) -> None:
    """Redis down: the guard cannot know whether the delivery was seen; the sender
    retries later rather than the webhook accepting it unchecked."""
    rt = isr.ISR(f"redis://127.0.0.1:{free_port()}/0?timeout=0.2")
    try:
        answer = await Webhook(runtime=rt, hmac_secret=HKEY, clock=clock).handle(headers(), BODY)
        assert answer.status == 503
        assert "replay guard" in answer.body["error"]
        assert rt.stats().invalidations == 0
    finally:
        await rt.aclose()


CHILD = """
import anyio, json, sys, time
import isr
from isr.webhook import Webhook

url, ns, key, body, stamp, signature = sys.argv[1:7]
headers = {"content-type": "application/json", "x-isr-timestamp": stamp,
           "x-isr-signature": signature}

async def main():
    async with isr.ISR(url, namespace=ns) as rt:
        answer = await Webhook(runtime=rt, hmac_secret=key).handle(headers, body.encode())
    print(answer.status)

anyio.run(main)
"""


@pytest.mark.parametrize("where", ["disk", "redis"])
def test_a_delivery_accepted_by_another_process_is_a_replay(
    where: str, tmp_path: Path, redis_server: RedisServer, ns: str
) -> None:
    url = f"disk://{tmp_path / 'cache'}" if where == "disk" else redis_server.url
    stamp = int(time.time())
    signed = sign(BODY, HKEY, timestamp=stamp)
    args = [url, ns, HKEY, BODY.decode(), signed["x-isr-timestamp"], signed["x-isr-signature"]]

    def deliver() -> int:
        done = subprocess.run(
            [sys.executable, "-c", CHILD, *args], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return int(json.loads(done.stdout))

    assert deliver() == 200
    assert deliver() == 401  # another process, after the first one exited
