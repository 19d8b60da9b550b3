"""What a job ran with, taken on the remote at its start: the interpreter and its packages.

The package list is `pip freeze`'s without running pip: Name and Version of every
`*.dist-info` / `*.egg-info` in the interpreter's site-packages, read by importlib.metadata
in the interpreter itself (in this process when the agent runs on it, else one short run
of it). It is cached in ~/.cache/tether/packages/ keyed by the interpreter and the mtimes
of its site-packages directories (an install or removal changes them), so a warm start
costs a few stats. Standard library only, Python >= 3.8.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional

from .fsops import read_json

# Heavy fields of a record: `job_list` leaves them out (tether show asks for them).
HEAVY = ("dirty_diff", "untracked", "packages")
SITE_NAMES = ("site-packages", "dist-packages")
RACY_S = 2.0
PROBE = r"""
import json, os, platform, sys
dirs = [p for p in sys.path if p and os.path.basename(p.rstrip('/')) in %r and os.path.isdir(p)]
names = []
try:
    from importlib import metadata
    for dist in metadata.distributions(path=dirs):
        names.append([dist.metadata['Name'] or '', dist.version or ''])
except Exception:
    names = None
print(json.dumps({'executable': sys.executable, 'version': platform.python_version(),
                  'dirs': dirs, 'names': names}))
""" % (SITE_NAMES,)


def cache_dir() -> str:
    return os.path.expanduser("~/.cache/tether/packages")


def site_dirs() -> List[str]:
    """This interpreter's site-packages directories, in sys.path order."""
    return [
        path
        for path in sys.path
        if path and os.path.basename(path.rstrip("/")) in SITE_NAMES and os.path.isdir(path)
    ]


def stamp(dirs: List[str]) -> List[Any]:
    """The cache key's changing part: each directory's mtime (None when it is gone)."""
    out: List[Any] = []
    for path in dirs:
        try:
            out.append([path, os.stat(path).st_mtime_ns])
        except OSError:
            out.append([path, None])
    return out


def freeze(names: List[Any]) -> List[str]:
    """'Name==version' per distribution, the first of a name on the path winning, sorted."""
    seen: Dict[str, str] = {}
    for pair in names:
        name, version = str(pair[0] or "").strip(), str(pair[1] or "").strip()
        key = name.lower().replace("_", "-").replace(".", "-")
        if name and key not in seen:
            seen[key] = "%s==%s" % (name, version)
    return [seen[key] for key in sorted(seen)]


def _here_names(dirs: List[str]) -> Optional[List[Any]]:
    try:
        from importlib import metadata
    except ImportError:  # pragma: no cover - Python >= 3.8 has it
        return None
    names: List[Any] = []
    try:
        for dist in metadata.distributions(path=dirs):
            names.append([dist.metadata["Name"] or "", dist.version or ""])
    except Exception:
        return None
    return names


def _settled(data: Dict[str, Any]) -> bool:
    """No directory of the stamp changed within RACY_S: a change in the same timestamp
    tick as our listing could otherwise go unseen by the next stamp."""
    now = time.time()
    for _, mtime in data.get("stamp") or []:
        if mtime is not None and mtime / 1e9 > now - RACY_S:
            return False
    return True


def _save(path: str, data: Dict[str, Any]) -> None:
    if not _settled(data):
        return
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        temp = "%s.%d.tmp" % (path, os.getpid())
        with open(temp, "w", encoding="utf-8") as handle:
            json.dump(data, handle)
        os.replace(temp, path)
    except OSError:
        pass  # a cache: never worth failing a job start for


def _same_interpreter(python: Optional[str]) -> bool:
    """By path, not by file: every venv's python links to the same binary."""
    if not python:
        return True
    return os.path.abspath(python) == os.path.abspath(sys.executable)


def interpreter(python: Optional[str] = None) -> Dict[str, Any]:
    """{python_path, python_version, packages} of python (default: the agent's own).

    packages is None when they cannot be read (an interpreter that does not start).
    """
    here = _same_interpreter(python)
    path = sys.executable if here or not python else python
    key = hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    cache_file = os.path.join(cache_dir(), key + ".json")
    cached = read_json(cache_file) or {}
    if here:
        return _this_one(path, cache_file, cached)
    return _another(path, cache_file, cached)


def _this_one(path: str, cache_file: str, cached: Dict[str, Any]) -> Dict[str, Any]:
    """The agent's own interpreter: importlib.metadata in this process."""
    dirs = site_dirs()
    version = platform.python_version()
    if cached.get("stamp") == stamp(dirs) and cached.get("version") == version:
        return _answer(path, version, cached.get("packages"))
    names = _here_names(dirs)
    packages = None if names is None else freeze(names)
    _save(cache_file, {"stamp": stamp(dirs), "version": version, "packages": packages})
    return _answer(path, version, packages)


def _another(path: str, cache_file: str, cached: Dict[str, Any]) -> Dict[str, Any]:
    """Another interpreter: one short run of it, unless its cached answer still holds."""
    try:
        exe_mtime: Any = os.stat(path).st_mtime_ns
    except OSError:
        exe_mtime = None
    dirs = [str(d) for d in cached.get("dirs") or []]
    if cached and cached.get("exe") == exe_mtime and cached.get("stamp") == stamp(dirs):
        return _answer(path, cached.get("version"), cached.get("packages"))
    probed = _probe(path)
    if probed is None:
        return _answer(path, None, None)
    dirs = [str(d) for d in probed.get("dirs") or []]
    names = probed.get("names")
    packages = None if names is None else freeze(list(names))
    entry = {"exe": exe_mtime, "dirs": dirs, "stamp": stamp(dirs), "packages": packages}
    entry["version"] = probed.get("version")
    _save(cache_file, entry)
    return _answer(path, entry["version"], packages)


def _probe(python: str) -> Optional[Dict[str, Any]]:
    try:
        done = subprocess.run(
            [python, "-c", PROBE],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    try:
        data = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None
    return data if isinstance(data, dict) else None


def _answer(path: str, version: Any, packages: Any) -> Dict[str, Any]:
    return {"python_path": path, "python_version": version, "packages": packages}


def job_python(header: Dict[str, Any]) -> Optional[str]:
    """The interpreter a job's `python` means, where the header names one (else None)."""
    python = header.get("python")
    if isinstance(python, list):
        python = python[0] if python else None
    if not isinstance(python, str) or not python:
        return None
    if os.sep in python:
        return os.path.expanduser(python)
    import shutil

    return shutil.which(python)


def remote(header: Dict[str, Any]) -> Dict[str, Any]:
    """The remote half of a job's provenance (never raises: a job starts without it)."""
    try:
        return interpreter(job_python(header))
    except Exception as error:
        return {"python_path": sys.executable, "provenance_error": str(error)}


def light(record: Dict[str, Any]) -> Dict[str, Any]:
    """The record without its heavy fields (for listings)."""
    for key in HEAVY:
        record.pop(key, None)
    return record
