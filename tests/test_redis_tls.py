"""``rediss://``: the Redis store over TLS, against a real redis-server with a test CA."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import isr
from isr import Status

from ._started import stop_process
from .redis_server import free_port, server_binary


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """A TLS-only redis-server on loopback with a certificate from a CA made for the test."""
    if shutil.which("openssl") is None:
        raise RuntimeError("openssl is needed to make the test certificates")
    work = tmp_path_factory.mktemp("tls")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
            "/CN=isr test CA", "-keyout", "ca.key", "-out", "ca.crt", cwd=work)  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", "server.key", "-out", "server.csr", cwd=work)  # fmt: skip
    (work / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "1", "-extfile", "san.cnf", "-out", "server.crt",
            cwd=work)  # fmt: skip
    port = free_port()
    server = subprocess.Popen(
        [server_binary("redis"), "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", "server.crt", "--tls-key-file", "server.key",
         "--tls-ca-cert-file", "ca.crt", "--tls-auth-clients", "no",
         "--save", "", "--appendonly", "no", "--dir", str(work)],
        cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while subprocess.run(
            ["redis-cli", "-p", str(port), "--tls", "--cacert", str(work / "ca.crt"), "ping"],
            capture_output=True, text=True,
        ).stdout.strip() != "PONG":  # fmt: skip
            assert server.poll() is None, "the TLS redis-server exited at start"
            assert time.monotonic() < deadline, "the TLS redis-server did not answer"
            time.sleep(0.05)
        yield port, work / "ca.crt"
    finally:
        stop_process(server, 10)


def test_rediss_serves_and_invalidates_over_tls(tls_redis: tuple[int, Path]) -> None:
    port, ca = tls_redis
    rt = isr.ISR(f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca}", namespace="tls-sync")
    calls = []

    @rt.with_revalidate("page:{slug}", ttl=60, tags=["pages"])
    def page(slug: str) -> str:
        calls.append(slug)
        return f"{slug} v{len(calls)}"

    assert page("a") == "a v1"
    assert page.lookup("a").status is Status.HIT
    assert rt.invalidate_tag_sync("pages") == 1
    result = page.lookup("a")
    assert (result.value, result.status) == ("a v2", Status.MISS)
    assert rt.stats().store_errors == 0
    rt.close()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # redis-py's asyncio client
async def test_rediss_from_async_code(tls_redis: tuple[int, Path]) -> None:
    port, ca = tls_redis
    async with isr.ISR(
        f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca}", namespace="tls-async", l1=True
    ) as rt:
        assert await rt.wait_ready(10)

        @rt.with_revalidate("k", ttl=60)
        async def load() -> dict[str, int]:
            return {"n": 1}

        assert await load() == {"n": 1}
        assert rt.adapter.get("k") is not None  # stored in Redis, over TLS
        assert rt.stats().store_errors == 0


def test_a_server_certificate_it_cannot_verify_is_a_store_failure_not_a_crash(
    tls_redis: tuple[int, Path],
) -> None:
    port, _ = tls_redis
    rt = isr.ISR(f"rediss://127.0.0.1:{port}/0", namespace="tls-untrusted")  # no CA given

    @rt.with_revalidate("k", ttl=60)
    def load() -> str:
        return "from the origin"

    assert load() == "from the origin"  # answered, though Redis could not be trusted
    assert rt.stats().store_errors >= 1
    rt.close()
