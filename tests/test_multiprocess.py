"""Several real processes sharing one store (disk and Redis): one origin call per key."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import isr

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["disk", "redis", "redis-l1", "valkey"])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "disk":
        return f"disk://{tmp_path / 'cache'}"
    server = "valkey_server" if request.param == "valkey" else "redis_server"
    # About who fetches, not about Redis's timeouts (tests/test_redis_adapter.py and the
    # fault suite cover those): a command may wait 5 s, so that a loaded machine cannot
    # time out a read and turn a waiting caller into a fetching one.
    url = f"{request.getfixturevalue(server).url}?timeout=5"
    return url + "#l1" if request.param == "redis-l1" else url


def split(url: str) -> tuple[str, bool]:
    """The URL, and whether the instances put an L1 in front of it (marked ``#l1``)."""
    return url.removesuffix("#l1"), url.endswith("#l1")


_children: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def _no_child_outlives_its_test() -> Iterator[None]:
    """A test that fails half-way leaves no child running into the next test."""
    yield
    while _children:
        child = _children.pop()
        if child.poll() is None:
            child.kill()
        child.communicate()


def spawn(url: str, namespace: str, work: Path, callers: int, *extra: str) -> subprocess.Popen[str]:
    store, l1 = split(url)
    args = [store, namespace, str(work), str(callers), *extra, *(["--l1"] if l1 else [])]
    child = subprocess.Popen(
        [sys.executable, "-m", "tests._mp_child", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _children.append(child)
    return child


def finish(proc: subprocess.Popen[str]) -> list[list[object]]:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    results: list[list[object]] = json.loads(out)
    return results


def start_together(procs: list[subprocess.Popen[str]], work: Path) -> None:
    time.sleep(0.5)  # let every child import and connect before the go
    (work / "go").touch()


def release_when_ready(procs: list[subprocess.Popen[str]], work: Path) -> None:
    """Let the origin answer once every (``--gated``) child's callers have all asked."""
    deadline = time.monotonic() + 60
    while len(list(work.glob("ready-*"))) < len(procs):
        assert time.monotonic() < deadline, "the children never got ready"
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(f"a child ended early: {p.communicate()[1]}")
        time.sleep(0.01)
    (work / "release").touch()


def calls(work: Path) -> int:
    path = work / "calls"
    return path.stat().st_size if path.exists() else 0


def test_cold_key_three_processes_fifty_callers_each_one_origin_call(
    shared_url: str, namespace: str, tmp_path: Path
) -> None:
    procs = [spawn(shared_url, namespace, tmp_path, 50, "--gated") for _ in range(3)]
    start_together(procs, tmp_path)
    release_when_ready(procs, tmp_path)
    results = [r for p in procs for r in finish(p)]
    assert len(results) == 150
    assert calls(tmp_path) == 1
    assert {json.dumps(value, sort_keys=True) for _, value in results} == {
        json.dumps(results[0][1], sort_keys=True)
    }  # all 150 got the one fetched value
    assert {status for status, _ in results} == {"MISS"}


def test_stale_key_is_refreshed_by_one_process(
    shared_url: str, namespace: str, tmp_path: Path
) -> None:
    filler = spawn(shared_url, namespace, tmp_path, 1, "--loader-sleep", "0")
    (tmp_path / "go").touch()
    finish(filler)
    assert calls(tmp_path) == 1
    (tmp_path / "go").unlink()
    # 61 s later for the children: past the ttl of 60 s, within the unbounded swr. The
    # refresh waits for the release, so no caller can see it land, however late its
    # process starts.
    procs = [
        spawn(shared_url, namespace, tmp_path, 50, "--offset", "61", "--gated") for _ in range(3)
    ]
    start_together(procs, tmp_path)
    release_when_ready(procs, tmp_path)
    results = [r for p in procs for r in finish(p)]
    assert {status for status, _ in results} == {"STALE"}  # nobody waited for the refresh
    assert calls(tmp_path) == 2  # one refresh across the three processes


def test_a_dead_lock_holder_blocks_nobody_past_the_lock_ttl(
    shared_url: str, namespace: str, tmp_path: Path
) -> None:
    holder = spawn(shared_url, namespace, tmp_path, 1, "--loader-sleep", "60", "--lock-ttl", "1")
    (tmp_path / "go").touch()
    deadline = time.monotonic() + 20
    while calls(tmp_path) < 1:  # the holder took the lock and called the origin
        assert time.monotonic() < deadline, "the holder never fetched"
        time.sleep(0.01)
    os.kill(holder.pid, signal.SIGKILL)
    holder.communicate()
    started = time.monotonic()
    store, l1 = split(shared_url)
    runtime = isr.ISR(store, namespace=namespace, lock_ttl=1, l1=l1)

    @runtime.with_revalidate("page:{slug}", ttl=60)
    def page(slug: str) -> str:
        return f"{slug} by the survivor"

    assert page("home") == "home by the survivor"
    assert time.monotonic() - started < 1 + 2.0  # the lock's 1 s TTL, and some slack
    runtime.close()


_WORKER = """
import os, sys, time
import isr
go = sys.argv[2]
while not os.path.exists(go):
    time.sleep(0.001)
rt = isr.ISR(sys.argv[1], namespace="workers")
rt.close()
"""


def test_workers_starting_at_once_on_a_new_disk_directory_all_start(tmp_path: Path) -> None:
    """A server's workers start together: each creates the disk store's tables in the new
    directory at the same moment, and every one of them starts."""
    for n in range(5):  # five fresh directories, eight workers each
        url, go = f"disk://{tmp_path / f'cache{n}'}", tmp_path / f"go{n}"
        workers = [
            subprocess.Popen(
                [sys.executable, "-c", _WORKER, url, str(go)],
                cwd=ROOT,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(8)
        ]
        _children.extend(workers)
        time.sleep(0.5)  # every worker has started Python and waits for the go
        go.touch()
        for worker in workers:
            _, err = worker.communicate(timeout=60)
            assert worker.returncode == 0, err
