"""Generate the sync twins of the async sources: ``python -m tests.unasync [--check]``.

Each pair below is one async source written by hand and its sync twin, generated: the
``async``/``await`` keywords dropped and the async spellings renamed by whole words (the
primitives of ``isr._synchronization``, the store operations ``aget`` -> ``get`` and so on),
then formatted by ruff. Never edit a generated file: edit its source and run this. With
``--check`` nothing is written; the exit status is 1 when a generated file is out of step
with its source, or when a substitution is no longer used by any file (so the table stays
honest). The test command runs the check (``tests/test_generated.py``).

The same idea as httpcore's ``scripts/unasync.py`` and hishel's ``scripts/unasync``.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Renames for the tests only: the sync runtime fixture and the public ``_sync`` spellings.
TEST_RENAMES: dict[str, str] = {
    "rt": "srt",
    "invalidate": "invalidate_sync",
    "invalidate_tag": "invalidate_tag_sync",
    "invalidate_all": "invalidate_all_sync",
    "drain": "drain_sync",
    "instances": "instances_sync",
    "confirm": "confirm_sync",
    "invalidation_log": "invalidation_log_sync",
    "AsyncCached": "SyncCached",
    "AsyncTaskGroup": "TaskGroup",
    "async_wait_until": "wait_until",
}
#: The runtime's own methods the status page calls.
STATUS_RENAMES: dict[str, str] = {
    "explain": "explain_sync",
    "instances": "instances_sync",
    "invalidation_log": "invalidation_log_sync",
}
TEST_KEYWORDS: Sequence[tuple[str, str]] = ((r"\npytestmark = pytest\.mark\.anyio\n", ""),)
#: Renames for the tests of the features beside the call, whose decorated functions keep
#: the one spelling ``fn.invalidate`` (so no ``invalidate`` rename there).
FEATURE_RENAMES: dict[str, str] = {
    "rt": "srt",
    "drain": "drain_sync",
    "invalidate_tag": "invalidate_tag_sync",
    "revalidating": "revalidating_sync",
    "AsyncCached": "SyncCached",
    "AsyncTaskGroup": "TaskGroup",
    "async_wait_until": "wait_until",
}

#: (async source, generated sync twin, its own renames and keyword rewrites), paths
#: relative to the repository's root.
PAIRS: Sequence[tuple[str, str, dict[str, str], Sequence[tuple[str, str]]]] = (
    ("isr/_async/driver.py", "isr/_sync/driver.py", {}, ()),
    ("isr/_async/explain.py", "isr/_sync/explain.py", {}, ()),
    ("isr/_async/status.py", "isr/_sync/status.py", STATUS_RENAMES, ()),
    ("adapters/_async/redis.py", "adapters/_sync/redis.py", {}, ()),
    ("adapters/_async/l1.py", "adapters/_sync/l1.py", {}, ()),
    ("tests/_async/test_runtime.py", "tests/_sync/test_runtime.py", TEST_RENAMES, TEST_KEYWORDS),
    (
        "tests/_async/test_features.py",
        "tests/_sync/test_features.py",
        FEATURE_RENAMES,
        TEST_KEYWORDS,
    ),
)

#: Whole-word renames, async spelling -> sync spelling.
RENAMES: dict[str, str] = {
    # isr._synchronization's named primitives
    "AsyncDriver": "SyncDriver",
    "AsyncRedisOps": "SyncRedisOps",
    "AsyncL1Ops": "SyncL1Ops",
    "AsyncRedis": "Redis",
    "AsyncEvent": "Event",
    "AsyncShieldCancellation": "ShieldCancellation",
    "AsyncSpawner": "Spawner",
    "ASYNC_RUNS_TIMEOUTS_INLINE": "RUNS_TIMEOUTS_INLINE",
    "async_fail_after": "fail_after",
    "async_sleep": "sleep",
    "async_usable": "usable",
    "async_warn_blocking": "warn_blocking",
    # the store interface (isr.adapters.base.Adapter)
    "aget": "get",
    "aset": "set",
    "adelete": "delete",
    "atagged": "tagged",
    "auntag": "untag",
    "ageneration": "generation",
    "abump_generation": "bump_generation",
    "anote_invalidation": "note_invalidation",
    "ainvalidated_since": "invalidated_since",
    "aannounce": "announce",
    "aacquire": "acquire",
    "arelease": "release",
    "afetch_locked": "fetch_locked",
    "ainspect": "inspect",
    "aclaim": "claim",
    "amark": "mark",
    "ainvalidate_tag": "invalidate_tag",
    "astore": "store",
    "aforget_local": "forget_local",
    "aunclaim": "unclaim",
    "atake": "take",
    "afinish": "finish",
    "aregister": "register",
    "aunregister": "unregister",
    "ainstances": "instances",
    "alog_invalidation": "log_invalidation",
    "aconfirm_logged": "confirm_logged",
    "ainvalidation_log": "invalidation_log",
    "_aprune_confirmations": "_prune_confirmations",
    # the stores' own plumbing
    "aread": "read",
    "acommand": "command",
    "_arun": "_run",
    "_aconnect": "_connect",
    "_aclient_ready": "_client_ready",
    "_adone": "_done",
    "_acheck_runs": "_check_runs",
    "_atag_marked": "_tag_marked",
    "_aread_generation": "_read_generation",
    "_aowner": "_owner",
    "_aop": "_op",
    "_arun_command": "_run_command",
    "_apublish": "_publish",
    "_awrite": "_write",
    "aclose": "close",
}

#: Keyword rewrites, applied before the renames.
KEYWORDS: Sequence[tuple[str, str]] = (
    (r"\basync def\b", "def"),
    (r"\basync with\b", "with"),
    (r"\bawait ", ""),
    (r"\bAwaitable\[(\w+)\]", r"\1"),
    (r"\bfrom redis\.asyncio import Redis as AsyncRedis\b", "from redis import Redis"),
)


def header(source: str) -> str:
    return (
        f"# GENERATED from {source} by tests/unasync.py: do not edit.\n"
        "# Edit the async source, then run `python -m tests.unasync`.\n"
    )


def unasync(
    text: str,
    used: set[str],
    renames: dict[str, str] = RENAMES,
    keywords: Sequence[tuple[str, str]] = KEYWORDS,
) -> str:
    """``text`` with its async spellings turned sync (``used`` collects what applied)."""
    for pattern, replacement in keywords:
        text, n = re.subn(pattern, replacement, text)
        if n:
            used.add(pattern)

    def rename(match: re.Match[str]) -> str:
        used.add(match.group(1))
        return renames[match.group(1)]

    return re.sub(r"\b(" + "|".join(map(re.escape, renames)) + r")\b", rename, text)


def formatted(text: str, path: str) -> str:
    """``text`` as ruff formats it (with the project's settings), imports sorted."""
    ruff = [sys.executable, "-m", "ruff"]
    text = subprocess.run(
        [*ruff, "check", "--select", "I,F401", "--fix", "--quiet", "--stdin-filename", path, "-"],
        input=text,
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    ).stdout
    done = subprocess.run(
        [*ruff, "format", "--quiet", "--stdin-filename", path, "-"],
        input=text,
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    return done.stdout


def generate() -> tuple[dict[str, str], set[str]]:
    """Every generated file's text, by path, and the substitutions that applied."""
    used: set[str] = set()
    out = {}
    for source, target, renames, keywords in PAIRS:
        text = (ROOT / source).read_text(encoding="utf-8")
        sync = unasync(text, used, {**RENAMES, **renames}, (*keywords, *KEYWORDS))
        out[target] = formatted(header(source) + sync, target)
    return out, used


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.unasync", description=__doc__)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 on drift")
    args = parser.parse_args(argv)
    generated, used = generate()
    problems = []
    for target, text in generated.items():
        path = ROOT / target
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        if args.check:
            problems.append(f"{target} is out of step with its source: run python -m tests.unasync")
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {target}")
    every = [
        *RENAMES,
        *TEST_RENAMES,
        *FEATURE_RENAMES,
        *(p for p, _ in (*KEYWORDS, *TEST_KEYWORDS)),
    ]
    unused = [name for name in every if name not in used]
    if unused:
        problems.append(f"substitutions no file uses any more: {', '.join(unused)}")
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
