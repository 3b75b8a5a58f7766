"""The distribution: an sdist carrying the sources, the licence and nothing of CI's, a wheel
built from it with one import name (``isr``), coexisting with any ``adapters``, and a module
graph without cycles."""

from __future__ import annotations

import ast
import email
import os
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist, and the wheel built from it (as ``pip install`` of the sdist builds it)."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "-q", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    return out


@pytest.fixture(scope="module")
def wheel(dists: Path) -> Path:
    (found,) = dists.glob("isr_runtime-*.whl")
    return found


@pytest.fixture(scope="module")
def sdist(dists: Path) -> list[str]:
    """The sdist's member names, without the leading ``isr_runtime-<version>/``."""
    (found,) = dists.glob("isr_runtime-*.tar.gz")
    with tarfile.open(found) as archive:
        return [name.partition("/")[2] for name in archive.getnames()]


def _metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return email.message_from_bytes(archive.read(name))


def test_the_licence_is_in_the_repository_the_sdist_and_the_wheel(
    dists: Path, sdist: list[str], wheel: Path
) -> None:
    licence = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert licence.startswith("MIT License\n\nCopyright (c) isr-runtime contributors\n")
    assert "LICENSE" in sdist
    (archive,) = dists.glob("isr_runtime-*.tar.gz")
    with tarfile.open(archive) as tar:
        member = tar.extractfile(f"{archive.name.removesuffix('.tar.gz')}/LICENSE")
        assert member is not None
        assert member.read().decode() == licence
    with zipfile.ZipFile(wheel) as archive_:
        (name,) = [n for n in archive_.namelist() if n.endswith(".dist-info/licenses/LICENSE")]
        assert archive_.read(name).decode() == licence
    metadata = _metadata(wheel)
    assert metadata["License-Expression"] == "MIT"
    assert metadata.get_all("License-File") == ["LICENSE"]


def test_the_sdist_carries_the_sources_and_nothing_of_ci_venv_or_caches(sdist: list[str]) -> None:
    for needed in ("pyproject.toml", "README.md", "LICENSE", "isr/__init__.py",
                   "isr/adapters/base.py", "adapters/redis.py", "tests/conftest.py",
                   "docs/mkdocs.yml"):  # fmt: skip
        assert needed in sdist
    unwanted = {".ci", ".venv", "venv", ".git", "__pycache__", ".mypy_cache", ".ruff_cache",
                ".pytest_cache", "build", "dist", "site"}  # fmt: skip
    for name in sdist:
        assert not unwanted & set(name.split("/")), name
        assert not name.endswith((".pyc", ".pyo", ".whl", ".tar.gz")), name


def test_the_project_urls(wheel: Path) -> None:
    urls = dict(u.split(", ", 1) for u in _metadata(wheel).get_all("Project-URL") or [])
    assert set(urls) == {"Homepage", "Documentation", "Source", "Issues"}
    for url in urls.values():
        assert "isr-runtime/isr-runtime" in url or "isr-runtime.github.io/isr-runtime" in url
    assert urls["Issues"].endswith("/issues")


def test_the_wheel_claims_only_the_isr_name(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert tops == {"isr"}
    for store in ("base", "memory", "disk", "redis", "l1", "_sync/redis", "_async/redis"):
        assert f"isr/adapters/{store}.py" in names
    assert "isr/py.typed" in names
    assert not any("/tests/" in name or name.startswith("tests/") for name in names)


def _module_name(path: Path) -> str:
    relative = path.relative_to(ROOT)
    parts = list(relative.with_suffix("").parts)
    if parts[0] == "adapters":
        parts.insert(0, "isr")  # installed as isr/adapters
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, module: str) -> Iterator[str]:
    """The modules ``path`` imports, at its top or inside its functions (not those under
    ``TYPE_CHECKING``, which only the type checker reads)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def walk(node: ast.AST) -> Iterator[str]:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (i for child in node.orelse for i in walk(child))
            return
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = parts[: len(parts) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            yield from walk(child)

    yield from walk(ast.parse(path.read_text(encoding="utf-8")))


def test_no_import_cycle_between_the_modules() -> None:
    """Not at import time, and not by deferring an import into a function either."""
    files = [*ROOT.glob("isr/**/*.py"), *ROOT.glob("adapters/**/*.py")]
    modules = {_module_name(p): p for p in files if "isr/adapters" not in p.as_posix()}
    graph = {
        name: {dep for dep in _imports(path, name) if dep in modules and dep != name}
        for name, path in modules.items()
    }
    cycles: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        if node in trail:
            cycles.append([*trail[trail.index(node) :], node])
            return
        for dep in sorted(graph[node]):
            visit(dep, [*trail, node])

    for name in sorted(graph):
        visit(name, [])
    assert cycles == []


def _run(code: str, path: list[Path], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter whose ``isr`` comes from ``path`` (the installed
    wheel), not from this checkout."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, path))}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


USE_EVERY_STORE = """
import tempfile, isr
assert isr.__file__.startswith({target!r}), isr.__file__
import adapters
assert adapters.MINE == "the project's own", adapters.__file__
urls = ["memory://", "disk://" + tempfile.mkdtemp(), {redis!r}]
for url in urls:
    for l1 in ([False, True] if url.startswith("redis") else [False]):
        with isr.ISR(url, namespace="coexist", l1=l1) as rt:
            assert rt.wait_ready_sync(10)
            @rt.with_revalidate("k:{{x}}", ttl=60)
            def f(x: int) -> int:
                return x * 2
            assert f(21) == 42 and f.lookup(21).status is isr.Status.HIT, url
            rt.invalidate_sync("k:21", mode="purge")
print("ok")
"""


def test_a_project_with_its_own_adapters_package_uses_every_store(
    wheel: Path, tmp_path: Path, redis_server: RedisServer
) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    project = tmp_path / "project"
    (project / "adapters").mkdir(parents=True)
    (project / "adapters" / "__init__.py").write_text('MINE = "the project\'s own"\n')
    code = USE_EVERY_STORE.format(target=str(target), redis=redis_server.url)
    done = _run(code, [project, target], project)
    assert done.stdout.strip() == "ok", done.stderr


def test_isr_works_beside_the_index_adapters_distribution(
    wheel: Path, tmp_path: Path, redis_server: RedisServer
) -> None:
    """``adapters`` on the package index is an ML library (it needs torch); installed beside
    isr-runtime, neither one's files are the other's, and isr works."""
    target = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target)]
    subprocess.run([*pip, str(wheel), "adapters==1.3.0"], check=True, capture_output=True)
    assert (target / "adapters").is_dir()  # theirs, untouched
    assert (target / "isr" / "adapters" / "redis.py").is_file()  # ours, under isr
    code = (
        "import isr\n"
        f"with isr.ISR({redis_server.url!r}, namespace='beside') as rt:\n"
        "    assert rt.invalidate_sync('k') is False\n"
        "print('ok')\n"
    )
    done = _run(code, [target], tmp_path)
    assert done.stdout.strip() == "ok", done.stderr
    theirs = _run("import adapters", [target], tmp_path)
    assert "torch" in theirs.stderr or "transformers" in theirs.stderr  # theirs needs its deps
