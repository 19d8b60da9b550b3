"""Offline env builds (`tether env sync --offline`): the host's python described for a local
`pip download`, the wheels the client pushes, and tether's uv taken from a pushed wheel.

Compute nodes often reach no package index. The client downloads wheels for this host's
platform and python (the tags come from here: `describe`), pushes the ones this host lacks
into ~/.cache/tether/wheels (`env_wheels` says which, `env_wheel_put` writes them in chunks:
a temporary file, checked against its sha256, renamed into place), and the build then runs
with no index at all (`--no-index --find-links` that directory, uv's `--offline`). Standard
library only, Python >= 3.8.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import zipfile
from typing import Any, Dict, List, Optional, Tuple

from . import uvget
from .fsops import OpError
from .wire import ErrorKind

WHEEL_NAME = re.compile(r"[A-Za-z0-9_.+!-]+\.whl\Z")
SHA256 = re.compile(r"[0-9a-f]{64}\Z")
Answer = Tuple[Dict[str, Any], bytes]

# What pip needs to pick wheels for an interpreter: run by that interpreter.
_DESCRIBE = (
    "import json, platform, sys, sysconfig\n"
    "print(json.dumps({'version': list(sys.version_info[:3]), 'impl': sys.implementation.name,"
    " 'soabi': sysconfig.get_config_var('SOABI') or '', 'machine': platform.machine(),"
    " 'libc': list(platform.libc_ver()), 'platform': sysconfig.get_platform()}))\n"
)


def wheels_dir() -> str:
    return os.path.join(uvget.cache_root(), "wheels")


def _digests_dir() -> str:
    return os.path.join(wheels_dir(), ".sha256")


# ---- the host's python, as pip download's options ------------------------------------


def linux_platforms(machine: str, libc: str, version: str) -> List[str]:
    """The platform tags of wheels that run here, newest first (manylinux, musllinux, linux)."""
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine.lower(), machine.lower())
    tags: List[str] = []
    numbers = re.match(r"(\d+)\.(\d+)", version or "")
    if libc == "glibc" and numbers and numbers.group(1) == "2":
        lowest = 5 if arch in ("x86_64", "i686") else 17
        for minor in range(int(numbers.group(2)), lowest - 1, -1):
            tags.append("manylinux_2_%d_%s" % (minor, arch))
            legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}.get(minor)
            if legacy:
                tags.append("%s_%s" % (legacy, arch))
    elif libc != "glibc":
        tags += ["musllinux_1_%d_%s" % (minor, arch) for minor in range(2, -1, -1)]
    return [*tags, "linux_" + arch]


def pip_target(facts: Dict[str, Any]) -> Dict[str, Any]:
    """pip download's --python-version, --implementation, --abi and --platform values."""
    major, minor = int(facts["version"][0]), int(facts["version"][1])
    impl = {"cpython": "cp", "pypy": "pp"}.get(facts["impl"], facts["impl"][:2])
    soabi = str(facts.get("soabi") or "")
    if impl == "cp":
        found = re.match(r"cpython-(\d+[a-z]*)", soabi)
        abis = ["cp" + (found.group(1) if found else "%d%d" % (major, minor)), "abi3", "none"]
    else:
        abis = [re.sub(r"[-.]", "_", soabi), "none"] if soabi else ["none"]
    if str(facts.get("platform", "")).startswith("linux"):
        libc = facts.get("libc") or ["", ""]
        platforms = linux_platforms(str(facts["machine"]), str(libc[0]), str(libc[1]))
    else:
        platforms = [re.sub(r"[-.]", "_", str(facts.get("platform", "")))]
    return {
        "python_version": "%d.%d" % (major, minor),
        "implementation": impl,
        "abis": abis,
        "platforms": platforms,
    }


def describe(base: str) -> Dict[str, Any]:
    """pip_target for the interpreter an env of `base` is made from; does this host have uv."""
    if re.match(r"3(\.\d+)*\Z", base):  # a version: offline, it must be installed here
        found = shutil.which("python" + base)
        if not found:
            raise OpError(
                ErrorKind.NOPYTHON, "no python%s on this host for an offline build" % base
            )
        base = found
    try:
        done = subprocess.run(
            [base, "-c", _DESCRIBE], capture_output=True, text=True, timeout=60,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        facts = json.loads(done.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError):
        raise OpError(
            ErrorKind.NOPYTHON, "the env's python %s does not start on this host" % base
        ) from None
    target = pip_target(facts)
    target["uv"] = uvget.own_uv() is not None
    return target


# ---- wheels pushed by the client -----------------------------------------------------


def _check(name: Any, digest: Any) -> Tuple[str, str]:
    if not isinstance(name, str) or not WHEEL_NAME.match(name) or name.startswith("."):
        raise OpError(ErrorKind.BADWHEEL, "bad wheel name %r" % (name,))
    if not isinstance(digest, str) or not SHA256.match(digest):
        raise OpError(ErrorKind.BADWHEEL, "wheel %s needs a sha256" % name)
    return name, digest


def _have(name: str, digest: str) -> bool:
    try:
        with open(os.path.join(_digests_dir(), name), encoding="ascii") as handle:
            recorded = handle.read().strip()
    except OSError:
        return False
    return recorded == digest and os.path.isfile(os.path.join(wheels_dir(), name))


def env_wheels(header: Dict[str, Any], payload: bytes) -> Answer:
    """Which of the client's wheels ({name, sha256}) this host lacks."""
    wanted = header.get("wheels")
    if not isinstance(wanted, list):
        raise OpError(ErrorKind.BADWHEEL, "wheels must be a list")
    missing = []
    for item in wanted:
        name, digest = _check((item or {}).get("name"), (item or {}).get("sha256"))
        if not _have(name, digest):
            missing.append(name)
    return {"missing": missing, "dir": wheels_dir()}, b""


def env_wheel_put(header: Dict[str, Any], payload: bytes) -> Answer:
    """One chunk of a wheel at `offset`; the last one (offset + len = size) is checked
    against the sha256 and renamed into place (a cut push leaves only a part file)."""
    name, digest = _check(header.get("name"), header.get("sha256"))
    size, offset = header.get("size"), header.get("offset")
    if not isinstance(size, int) or not isinstance(offset, int) or not 0 <= offset <= size:
        raise OpError(ErrorKind.BADWHEEL, "bad size or offset for %s" % name)
    os.makedirs(_digests_dir(), mode=0o700, exist_ok=True)
    part = os.path.join(wheels_dir(), ".part-%s-%s" % (digest[:16], name))
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_TRUNC if offset == 0 else 0)
    fd = os.open(part, flags, 0o644)
    try:
        os.pwrite(fd, payload, offset)
    finally:
        os.close(fd)
    if offset + len(payload) < size:
        return {"done": False}, b""
    sha = hashlib.sha256()
    with open(part, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    if os.path.getsize(part) != size or sha.hexdigest() != digest:
        os.unlink(part)
        raise OpError(ErrorKind.BADWHEEL, "%s arrived damaged (size or sha256 differ)" % name)
    os.replace(part, os.path.join(wheels_dir(), name))
    with open(os.path.join(_digests_dir(), name), "w", encoding="ascii") as handle:
        handle.write(digest + "\n")
    return {"done": True}, b""


def offline_uv() -> Optional[str]:
    """tether's uv without an index: the one unpacked before, else one from a pushed wheel."""
    found = uvget.own_uv()
    if found:
        return found
    candidates = []
    with contextlib.suppress(OSError):
        for name in os.listdir(wheels_dir()):
            match = uvget.UV_WHEEL.match(name)
            if match and uvget.platform_fits(match.group(2)):
                candidates.append((uvget.version_key(match.group(1)), match.group(1), name))
    if not candidates:
        return None
    _, version, name = max(candidates)
    try:
        with open(os.path.join(wheels_dir(), name), "rb") as handle:
            return uvget.unpack_uv(handle.read(), version)
    except (OSError, StopIteration, zipfile.BadZipFile):
        return None


def offline_index_args() -> List[str]:
    """The installers' flags for an offline build: no index, the pushed wheels only."""
    return ["--no-index", "--find-links", wheels_dir()]


def register(agent: Any) -> None:
    """Add the offline wheel ops to the agent."""
    agent.add(env_wheels, env_wheel_put)
