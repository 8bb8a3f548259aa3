"""Ship the job-side code into the project space, so platform jobs need no install.

A CANFAR CASA container has CASA's own Python (casatools, casatasks, numpy) and can read
the project space, but our package is not installed there. We copy the job entry point
(:mod:`sails.casa` and any ``sails`` module it imports) into::

    <project>/.sails/runtime/<version>-<digest>/
        run_job.py              # python run_job.py JOB.json
        sails/__init__.py       # minimal, generated
        sails/casa/...          # copied from the installed package
        auto_selfcal/...        # vendored as source, with its
        auto_selfcal-2.1.dist-info/METADATA   # metadata (importlib.metadata.version)
        RUNTIME.json            # what was shipped (written last: marks the copy complete)

The folder name carries the package version and a digest of the shipped files, so an
upgraded (or edited, in development) package ships a new folder and jobs of the old one
keep running on theirs. Built in a temporary folder, then renamed into place.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path

import sails

RUNTIME_SUBDIR = Path(".sails") / "runtime"
ENTRY_NAME = "run_job.py"
STAMP_NAME = "RUNTIME.json"
JOB_PACKAGE = "sails.casa"
# What job-side code may import besides the standard library and the shipped sails modules:
# what a CASA container's Python provides.
# Pure-Python packages a job needs that a CASA container lacks are shipped whole beside
# sails/ (auto-selfcal: its own needs, matplotlib and scipy, come with monolithic CASA).
VENDORED_PACKAGES = ("auto_selfcal",)
# scipy: a requirement of casatasks itself, so every CASA (wheels or monolithic) has it.
JOB_SIDE_ALLOWED = frozenset({"numpy", "scipy", "casatools", "casatasks", *VENDORED_PACKAGES})

ENTRY_TEXT = '''\
"""ALMA-SAILS job entry point (shipped copy): python run_job.py JOB.json"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import sails.casa.runner as runner  # noqa: E402

if __name__ == "__main__":
    print(f"sails job runtime: {os.path.dirname(os.path.abspath(runner.__file__))}", flush=True)
    sys.exit(runner.main(sys.argv[1:]))
'''

INIT_TEXT = '''\
"""ALMA-SAILS job-side runtime (a shipped copy: only sails.casa and what it needs)."""

__version__ = {version!r}
'''


def _package_root() -> Path:
    return Path(sails.__file__).resolve().parent


def _module_file(module: str, root: Path) -> Path | None:
    """The file defining ``sails.x.y`` under ``root`` (the sails package folder)."""
    parts = module.split(".")[1:]
    base = root.joinpath(*parts) if parts else root
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    py = base.with_suffix(".py")
    return py if parts and py.is_file() else None


def _module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = ["sails", *rel.parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, module: str) -> set[str]:
    """Absolute names of every module ``path`` imports, anywhere in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_pkg = path.name == "__init__.py"
    package = module if is_pkg else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base)
                target = f"{prefix}.{node.module}" if node.module else prefix
            else:
                target = node.module or ""
            out.add(target)
            # ``from sails.casa import steps`` may name a submodule.
            out.update(f"{target}.{alias.name}" for alias in node.names if alias.name != "*")
    return out


def runtime_sources() -> dict[str, Path]:
    """Relative path in the runtime -> installed file, for everything jobs need."""
    root = _package_root()
    pkg_dir = root.joinpath(*JOB_PACKAGE.split(".")[1:])
    todo = [p for p in sorted(pkg_dir.rglob("*.py")) if "__pycache__" not in p.parts]
    sources: dict[str, Path] = {}
    while todo:
        path = todo.pop()
        rel = path.relative_to(root)
        if rel == Path("__init__.py"):
            continue  # generated: the real one may import orchestrator code
        key = str(Path("sails") / rel)
        if key in sources:
            continue
        sources[key] = path
        # Parent packages (other than sails itself) come with the module.
        parent = path.parent
        while parent != root:
            init = parent / "__init__.py"
            if init.is_file() and str(Path("sails") / init.relative_to(root)) not in sources:
                todo.append(init)
            parent = parent.parent
        for name in imports_of(path, _module_name(path, root)):
            if name == "sails" or not name.startswith("sails."):
                continue
            found = _module_file(name, root)
            if found is not None and str(Path("sails") / found.relative_to(root)) not in sources:
                todo.append(found)
    return dict(sorted(sources.items()))


def vendored_sources() -> dict[str, Path]:
    """Relative path in the runtime -> installed file, for the vendored packages."""
    import importlib.util

    out: dict[str, Path] = {}
    for name in VENDORED_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            continue  # not installed here: jobs that need it fail with a clear ImportError
        pkg = Path(next(iter(spec.submodule_search_locations)))
        for path in sorted(pkg.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                out[str(Path(name) / path.relative_to(pkg))] = path
        out.update(_vendored_metadata(name))
    return out


def _vendored_metadata(package: str) -> dict[str, Path]:
    """The package's ``<dist>-<version>.dist-info/METADATA``, shipped beside it.

    Job-side code reads the version with ``importlib.metadata`` (the self-cal summary
    records auto-selfcal's version); in a CASA-only image the source alone has no metadata,
    so the lookup failed at the very end of a finished run (issue #22, defect 7).
    """
    import importlib.metadata as md

    out: dict[str, Path] = {}
    for dist_name in md.packages_distributions().get(package, []):
        dist = md.distribution(dist_name)
        for f in dist.files or ():
            parts = Path(str(f)).parts
            if len(parts) == 2 and parts[0].endswith(".dist-info") and parts[1] == "METADATA":
                out[str(f)] = Path(str(f.locate()))
    return out


def runtime_version(sources: dict[str, Path] | None = None) -> str:
    sources = runtime_sources() if sources is None else sources
    digest = hashlib.sha256()
    digest.update(ENTRY_TEXT.encode())
    for rel, path in {**sources, **vendored_sources()}.items():
        digest.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    return f"{sails.__version__}-{digest.hexdigest()[:12]}"


def runtime_dir(project_root: Path, version: str | None = None) -> Path:
    return Path(project_root) / RUNTIME_SUBDIR / (version or runtime_version())


# CPython 3.11's ast.parse is not safe in parallel threads (SystemError "AST constructor
# recursion depth mismatch"); stages of one orchestrator ship the runtime from threads.
_SHIP_LOCK = threading.Lock()


def ensure_runtime(project_root: str | os.PathLike) -> Path:
    """Ship the job runtime into the project space if missing or stale; return its folder."""
    with _SHIP_LOCK:
        return _ensure_runtime(project_root)


def _ensure_runtime(project_root: str | os.PathLike) -> Path:
    sources = runtime_sources()
    version = runtime_version(sources)
    dest = runtime_dir(Path(project_root), version)
    if (dest / STAMP_NAME).is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    shutil.rmtree(tmp, ignore_errors=True)
    for rel, src in {**sources, **vendored_sources()}.items():
        target = tmp / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)
    (tmp / "sails").mkdir(parents=True, exist_ok=True)
    (tmp / "sails" / "__init__.py").write_text(INIT_TEXT.format(version=sails.__version__))
    (tmp / ENTRY_NAME).write_text(ENTRY_TEXT)
    stamp = {"version": version, "package_version": sails.__version__,
             "created": time.time(), "python": sys.version.split()[0],
             "files": [ENTRY_NAME, "sails/__init__.py", *sources]}
    (tmp / STAMP_NAME).write_text(json.dumps(stamp, indent=2))
    try:
        os.replace(tmp, dest)
    except OSError:
        # Another process shipped the same version first (dest is a non-empty folder).
        shutil.rmtree(tmp, ignore_errors=True)
        if not (dest / STAMP_NAME).is_file():
            raise
    return dest


def job_side_imports(sources: dict[str, Path] | None = None) -> dict[str, set[str]]:
    """Top-level packages each shipped file imports, other than stdlib and shipped sails."""
    sources = runtime_sources() if sources is None else sources
    root = _package_root()
    shipped = {_module_name(p, root) for p in sources.values()}
    out: dict[str, set[str]] = {}
    for rel, path in sources.items():
        names = set()
        for name in imports_of(path, _module_name(path, root)):
            top = name.split(".")[0]
            if top == "__future__" or top in sys.stdlib_module_names:
                continue
            if top == "sails":
                if name in shipped or any(s.startswith(name + ".") for s in shipped):
                    continue
                # ``from sails.casa.steps import STEPS``-style names resolve to attributes.
                if name.rpartition(".")[0] in shipped:
                    continue
            names.add(name if top == "sails" else top)
        if names:
            out[rel] = names
    return out
