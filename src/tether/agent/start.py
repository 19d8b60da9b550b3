"""What a job's command sees and whether it can start at all (agent side).

The target's python is what `python` and `python3` mean in a job: a shim directory holding
both names (links to the interpreter the agent runs under, which is the target's
`python`) comes first on PATH, then that interpreter's own directory (a venv's pip and
scripts). A command that cannot start is refused before tmux is asked (not found, not
executable), or found out within START_WAIT_S of the start (a script whose #! interpreter
is missing): either way `run` fails and the name stays free.
Standard library only, Python >= 3.8.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import sys
import time
from typing import Any, Dict, List, Optional

from . import fsops
from .wire import ErrorKind

START_WAIT_S = 3.0
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_RESERVED = frozenset(("TETHER_JOB", "TETHER_ARRAY_INDEX", "CUDA_VISIBLE_DEVICES", "PATH"))


def shim_dir(executable: Optional[str] = None) -> str:
    """~/.cache/tether/shims/<hash>/{python,python3}: scripts that exec the interpreter by
    its own path (a symlink would lose a venv: Python finds pyvenv.cfg next to the path it
    was started by). Made once per interpreter, atomically."""
    executable = os.path.abspath(executable or sys.executable)
    key = hashlib.sha256(executable.encode()).hexdigest()[:16]
    directory = os.path.expanduser(os.path.join("~/.cache/tether/shims", key))
    script = '#!/bin/sh\nexec %s "$@"\n' % shlex.quote(executable)
    for name in ("python", "python3"):
        shim = os.path.join(directory, name)
        with contextlib.suppress(OSError), open(shim, encoding="utf-8") as handle:
            if handle.read() == script:
                continue
        os.makedirs(directory, mode=0o755, exist_ok=True)
        tmp = "%s.%d.tmp" % (shim, os.getpid())
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(script)
        os.chmod(tmp, 0o755)  # noqa: S103 - an executable script, like any in ~/bin
        os.replace(tmp, shim)
    return directory


def path_prefix() -> List[str]:
    """The directories a job's PATH starts with (shims, then the interpreter's own)."""
    return [shim_dir(), os.path.dirname(os.path.abspath(sys.executable))]


def job_env(record: Dict[str, Any], base: Dict[str, str]) -> Dict[str, str]:
    """The environment a job runs with: base, its --env values, the python on PATH."""
    env = dict(base)
    env.update({str(k): str(v) for k, v in dict(record.get("env") or {}).items()})
    prefix = [str(p) for p in record.get("path_prefix") or []]
    rest = [p for p in env.get("PATH", os.defpath).split(os.pathsep) if p and p not in prefix]
    env["PATH"] = os.pathsep.join(prefix + rest)
    if record.get("virtual_env"):
        env["VIRTUAL_ENV"] = str(record["virtual_env"])
    return env


def check_env(value: Any) -> Dict[str, str]:
    """--env K=V values as sent by the client: names a shell would accept, text values."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise fsops.OpError(ErrorKind.BADENV, "env must be an object of names to strings")
    for key, item in value.items():
        if not isinstance(key, str) or not _ENV_NAME.match(key) or key in _RESERVED:
            raise fsops.OpError(ErrorKind.BADENV, "cannot set %r for a job" % (key,))
        if not isinstance(item, str) or "\x00" in item:
            raise fsops.OpError(ErrorKind.BADENV, "the value of %s must be text" % key)
    return dict(value)


def interpreter_fields() -> Dict[str, Any]:
    """Record fields naming the job's interpreter (path, version, venv)."""
    fields: Dict[str, Any] = {
        "path_prefix": path_prefix(),
        "python_executable": os.path.abspath(sys.executable),
        "python_version": "%d.%d.%d" % sys.version_info[:3],
    }
    if sys.prefix != getattr(sys, "base_prefix", sys.prefix):
        fields["virtual_env"] = sys.prefix
    return fields


def why_not_startable(argv0: str, cwd: str, record: Dict[str, Any]) -> Optional[str]:
    """Why argv0 cannot be started in cwd with the job's PATH, or None if it can."""
    if "/" in argv0:
        full = os.path.join(cwd, argv0)
        if not os.path.lexists(full):
            return "no such file %s" % argv0
        if os.path.isdir(full):
            return "%s is a directory" % argv0
        if not os.path.isfile(full):
            return "%s is a broken link" % argv0
        if not os.access(full, os.X_OK):
            return "%s is not executable (chmod +x it, or run it with python)" % argv0
        return None
    path = job_env(record, dict(os.environ))["PATH"]
    if shutil.which(argv0, path=path) is None:
        return "%r is not found on PATH (%s)" % (argv0, path)
    return None


def exec_failure(argv0: str, cwd: str, env: Dict[str, str], error: OSError) -> str:
    """Why exec failed, in words: a missing #! interpreter is named as such."""
    full = argv0 if "/" in argv0 else shutil.which(argv0, path=env.get("PATH"))
    if full:
        full = os.path.join(cwd, full)
    if error.errno == 2 and full and os.path.isfile(full):
        try:
            with open(full, "rb") as handle:
                first = handle.readline(256)
        except OSError:
            first = b""
        if first.startswith(b"#!"):
            line = first[2:].decode("utf-8", "replace").strip()
            return "its interpreter (#!%s) is missing" % line
    return error.strerror or str(error)


def await_start(path: str) -> Optional[Dict[str, Any]]:
    """The record once the wrapper left `starting` (None: still starting at the deadline)."""
    deadline = time.monotonic() + START_WAIT_S
    delay = 0.005
    while time.monotonic() < deadline:
        try:
            with open(path, encoding="utf-8") as handle:
                record: Dict[str, Any] = json.load(handle)
        except (OSError, ValueError):
            record = {}
        if record and record.get("state") != "starting":
            return record
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
    return None
