"""Remote Python environments, content-addressed and frozen like a job's code (section 13).

An env is ~/.cache/tether/envs/<digest>: a venv built from the project's spec (requirement
files, pyproject dependencies or uv.lock, as the client sent them) plus ipykernel. Its
digest covers the spec's digest (the files' bytes and options, from the client), the base
interpreter (path, version) and the platform, so every project and job with the same spec
on the same python shares one env. It is built once, in a temporary directory renamed into
place when complete (a cut or a failed build leaves nothing: the next build of that digest
clears what a killed agent left), under a per-digest lock; its files are read-only
afterwards. `tether-env.json` inside it (written last) records what it holds.

A job or kernel names its env by the spec (`env_spec`, resolved here) or by digest
(`env_digest`, a restart); the env's bin comes first on its PATH. Standard library only,
Python >= 3.8.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import select
import shutil
import stat
import subprocess
import sys
import sysconfig
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import envbuild
from .fsops import OpError, check_rel, read_json
from .wire import ErrorKind, Op

FORMAT = 1
META = "tether-env.json"
SPEC_DIR = ".tether-spec"
KINDS = ("uv.lock", "pyproject", "requirements", "none")
DIGEST_RE = re.compile(r"[0-9a-f]{16}\Z")
TMP_PREFIX = ".tmp-"
Answer = Tuple[Dict[str, Any], bytes]
Send = Callable[[Dict[str, Any]], None]


def envs_dir() -> str:
    return os.path.expanduser("~/.cache/tether/envs")


def projects_dir() -> str:
    """Per project (its remote dir's tag), the env its spec last mapped to."""
    return os.path.join(envs_dir(), ".projects")


# ---- the spec and the digest ----------------------------------------------------------


def check_spec(value: Any) -> Dict[str, Any]:
    """The env spec a client sent, checked: digest, kind, names relative to its files."""
    if not isinstance(value, dict):
        raise OpError(ErrorKind.BADSPEC, "env_spec must be an object")
    digest = value.get("digest")
    if not isinstance(digest, str) or not re.match(r"[0-9a-f]{64}\Z", digest):
        raise OpError(ErrorKind.BADSPEC, "env_spec needs a sha256 digest")
    if value.get("kind") not in KINDS:
        raise OpError(ErrorKind.BADSPEC, "unknown env kind %r" % (value.get("kind"),))
    for key in ("python", "index_url"):
        if not isinstance(value.get(key, ""), str):
            raise OpError(ErrorKind.BADSPEC, "env_spec %s must be text" % key)
    for key in ("main", "extras"):
        items = value.get(key, [])
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise OpError(ErrorKind.BADSPEC, "env_spec %s must be a list of text" % key)
    files = value.get("files")
    if files is not None:
        if not isinstance(files, dict) or not all(isinstance(t, str) for t in files.values()):
            raise OpError(ErrorKind.BADSPEC, "env_spec files must map names to text")
        for name in list(files) + list(value.get("main", [])):
            check_rel(name)
    return value


def _probe_python(python: str) -> Dict[str, Any]:
    """Identity of another interpreter (path, version, platform) by one short run of it."""
    code = (
        "import json, os, platform, sys, sysconfig; print(json.dumps({'exe': "
        "os.path.realpath(sys.executable), 'python': platform.python_version(), "
        "'impl': sys.implementation.name, 'platform': sysconfig.get_platform()}))"
    )
    try:
        done = subprocess.run(
            [python, "-c", code], capture_output=True, text=True, timeout=60,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError):
        raise OpError(
            ErrorKind.NOPYTHON, "the env's python %s does not start on this host" % python
        ) from None


def base_of(request: str) -> Tuple[str, Dict[str, Any]]:
    """(what the builder makes the venv from, the identity the digest covers)."""
    if not request:
        return sys.executable, {
            "exe": os.path.realpath(sys.executable),
            "python": "%d.%d.%d" % sys.version_info[:3],
            "impl": sys.implementation.name,
            "platform": sysconfig.get_platform(),
        }
    if re.match(r"3(\.\d+)*\Z", request):
        return request, {"request": request, "platform": sysconfig.get_platform()}
    found = os.path.expanduser(request) if "/" in request else shutil.which(request)
    if not found:
        raise OpError(ErrorKind.NOPYTHON, "no %s on this host for the env ([env] python)" % request)
    return found, _probe_python(found)


def env_digest(spec: Dict[str, Any], identity: Dict[str, Any]) -> str:
    text = json.dumps([FORMAT, spec["digest"], identity], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_meta(digest: str) -> Optional[Dict[str, Any]]:
    """What the env holds, or None when no complete env has that digest."""
    try:
        with open(os.path.join(envs_dir(), digest, META), encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def resolve(spec: Dict[str, Any]) -> Tuple[str, Optional[Dict[str, Any]], str]:
    """(env digest, its meta or None, the base python) for a spec on this host."""
    base, identity = base_of(str(spec.get("python") or ""))
    digest = env_digest(spec, identity)
    return digest, read_meta(digest), base


# ---- building -------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(digest: str, say: Callable[[str], None], cancelled: Callable[[], bool]) -> Any:
    """Hold the digest's build lock (waiting for another build of it, saying so)."""
    os.makedirs(envs_dir(), mode=0o755, exist_ok=True)
    fd = os.open(os.path.join(envs_dir(), ".lock-" + digest), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if not told:
                    say("another build of env %s is under way; waiting for it" % digest)
                    told = True
                if cancelled():
                    raise envbuild.Hangup() from None
                time.sleep(0.2)
        yield
    finally:
        os.close(fd)


def _clear_leftovers(digest: str) -> None:
    """Temporary trees a killed build of this digest left (the caller holds its lock)."""
    with contextlib.suppress(OSError):
        for name in os.listdir(envs_dir()):
            if name.startswith(TMP_PREFIX + digest + "-"):
                shutil.rmtree(os.path.join(envs_dir(), name), ignore_errors=True)


def _write_spec(spec: Dict[str, Any], directory: str) -> List[str]:
    """The spec's files under directory; the requirement files to install, as paths."""
    for name, text in spec.get("files", {}).items():
        path = os.path.join(directory, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
    return [os.path.join(directory, name) for name in spec.get("main", [])]


def _retarget(tree: str, final: str) -> None:
    """Scripts and configs naming the temporary path name the final one (pip's venvs
    write absolute #! lines; uv's relocatable ones do not)."""
    old, new = tree.encode(), final.encode()
    candidates = [os.path.join(tree, "pyvenv.cfg")]
    with contextlib.suppress(OSError):
        candidates += [os.path.join(tree, "bin", n) for n in os.listdir(os.path.join(tree, "bin"))]
    for path in candidates:
        try:
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode) or st.st_size > 1 << 20:
                continue
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError:
            continue
        if old in data and b"\0" not in data:
            with open(path, "wb") as handle:
                handle.write(data.replace(old, new))


def _freeze(tree: str) -> Tuple[int, int]:
    """Make every file read-only; (files, bytes) of the env (hard links counted once)."""
    seen = set()
    files = size = 0
    for directory, _, names in os.walk(tree):
        for name in names:
            path = os.path.join(directory, name)
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode):
                continue
            files += 1
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                size += st.st_size
            if st.st_mode & 0o222:
                os.chmod(path, stat.S_IMODE(st.st_mode) & ~0o222)
    return files, size


def _packages(python: str) -> Any:
    from .provenance import interpreter

    return interpreter(python).get("packages")


def build(
    spec: Dict[str, Any], digest: str, base: str, prefer: str, say: Any, cancelled: Any,
    offline: bool = False,
) -> Dict[str, Any]:  # fmt: skip
    """Build env `digest` (under its lock; at once if another build made it meanwhile)."""
    final = os.path.join(envs_dir(), digest)
    with _locked(digest, say, cancelled):
        meta = read_meta(digest)
        if meta is not None:
            return meta
        _clear_leftovers(digest)
        if os.path.lexists(final):  # not complete (no meta): never an env
            shutil.rmtree(final, ignore_errors=True)
        tree = os.path.join(envs_dir(), "%s%s-%d" % (TMP_PREFIX, digest, os.getpid()))
        started = time.time()
        spec_dir = tree + ".spec"  # beside the venv (uv makes it in an empty place)
        try:
            os.makedirs(spec_dir)
            job = {
                "say": say, "cancelled": cancelled, "target": tree, "spec_dir": spec_dir,
                "base": base, "kind": spec["kind"], "extras": list(spec.get("extras", [])),
                "index_url": spec.get("index_url") or "", "offline": offline,
                "requirements": _write_spec(spec, spec_dir),
            }  # fmt: skip
            builder = envbuild.build(job, prefer)
            os.rename(spec_dir, os.path.join(tree, SPEC_DIR))  # the env keeps its spec
            _retarget(tree, final)
            python = os.path.join(tree, "bin", "python")
            version = subprocess.run(
                [python, "-c", "import platform; print(platform.python_version())"],
                capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
            ).stdout.strip()  # fmt: skip
            packages = _packages(python)
            files, size = _freeze(tree)
            meta = {
                "digest": digest, "spec_digest": spec["digest"], "kind": spec["kind"],
                "source": spec.get("source"), "python_version": version, "base": base,
                "created": time.time(), "seconds": round(time.time() - started, 2),
                "packages": packages, "files": files, "size": size, "format": FORMAT,
            }  # fmt: skip
            meta.update(builder)
            with open(os.path.join(tree, META), "w", encoding="utf-8") as handle:
                json.dump(meta, handle, indent=1, sort_keys=True)
            os.rename(tree, final)
        except BaseException:
            shutil.rmtree(tree, ignore_errors=True)
            shutil.rmtree(spec_dir, ignore_errors=True)
            raise
    return meta


def _hung_up() -> bool:
    """Whether the client closed our input (the link dropped or it was interrupted)."""
    try:
        poller = select.poll()
        poller.register(0, select.POLLIN)
        return any(event & (select.POLLHUP | select.POLLERR) for _, event in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


def remember(root: Any, digest: str) -> None:
    """Note the env a project's spec maps to now (for status and prune)."""
    if not isinstance(root, str) or not root:
        return
    from .jobstore import project_tag, write_json

    with contextlib.suppress(OSError):
        write_json(os.path.join(projects_dir(), project_tag(root) + ".json"),
                   {"digest": digest, "root": root, "when": time.time()})  # fmt: skip


def light(meta: Optional[Dict[str, Any]], packages: bool = False) -> Optional[Dict[str, Any]]:
    if meta is None:
        return None
    return {k: v for k, v in meta.items() if packages or k != "packages"}


# ---- ops ------------------------------------------------------------------------------


def env_sync(header: Dict[str, Any], send: Send) -> Answer:
    """The env for a spec: ready at once, "missing" (no files sent, or build false; with
    `describe`, what a local `pip download` needs for this host), or built now with the
    installer's lines streamed as {"more": true, "line": ...} (`offline`: from pushed wheels
    only)."""
    spec = check_spec(header.get("env_spec"))
    digest, meta, base = resolve(spec)
    offline = bool(header.get("offline"))
    if meta is None and spec.get("files") is not None and header.get("build", True):

        def say(line: str) -> None:
            send({"id": header.get("id"), "ok": True, "more": True, "line": line})

        prefer = str(header.get("builder") or "auto")
        try:
            meta = build(spec, digest, base, prefer, say, _hung_up, offline)
        except envbuild.BuildFailed as error:
            raise OpError(ErrorKind.ENVBUILD, str(error)) from None
        built = True
    else:
        built = False
    if meta is None:
        answer: Dict[str, Any] = {"digest": digest, "state": "missing"}
        if header.get("describe"):
            from .envwheels import describe

            answer["target"] = describe(base)
        return answer, b""
    remember(header.get("root"), digest)
    answer = {"digest": digest, "state": "ready", "built": built, "meta": light(meta)}
    answer["path"] = os.path.join(envs_dir(), digest)
    if built:
        answer["packages"] = meta.get("packages")
    return answer, b""


def env_status(header: Dict[str, Any], payload: bytes) -> Answer:
    """The spec's env (built or not) and the env the project used before, with packages."""
    spec = check_spec(header.get("env_spec"))
    digest, meta, _ = resolve(spec)
    answer: Dict[str, Any] = {"digest": digest, "state": "ready" if meta else "missing"}
    answer["meta"] = light(meta, packages=True)
    previous = _pointer(header.get("root"))
    if previous and previous != digest:
        answer["previous"] = light(read_meta(previous), packages=True)
    return answer, b""


def _pointer(root: Any) -> Optional[str]:
    if not isinstance(root, str) or not root:
        return None
    from .jobstore import project_tag

    data = read_json(os.path.join(projects_dir(), project_tag(root) + ".json"))
    digest = data.get("digest") if data else None
    return digest if isinstance(digest, str) and DIGEST_RE.match(digest) else None


def in_use() -> Dict[str, str]:
    """Env digests something still uses -> why: a job record, a kernel, a project's spec."""
    from .jobstore import all_records, kernels_dir

    used: Dict[str, str] = {}
    for record in all_records():
        if isinstance(record.get("env_digest"), str):
            used.setdefault(record["env_digest"], "job %s" % record.get("name"))
    with contextlib.suppress(OSError):
        for name in os.listdir(kernels_dir()):
            record = read_json(os.path.join(kernels_dir(), name, "record.json")) or {}
            if isinstance(record.get("env_digest"), str):
                used.setdefault(record["env_digest"], "kernel %s" % name)
    with contextlib.suppress(OSError):
        for name in os.listdir(projects_dir()):
            data = read_json(os.path.join(projects_dir(), name)) or {}
            if isinstance(data.get("digest"), str):
                used.setdefault(data["digest"], "the spec of %s" % data.get("root"))
    return used


def env_prune(header: Dict[str, Any], payload: bytes) -> Answer:
    """Remove every env nothing uses (see in_use) and what killed builds left."""
    used = in_use()
    removed: List[Dict[str, Any]] = []
    kept: List[Dict[str, Any]] = []
    try:
        names = sorted(os.listdir(envs_dir()))
    except OSError:
        names = []
    for name in names:
        path = os.path.join(envs_dir(), name)
        if DIGEST_RE.match(name):
            meta = read_meta(name) or {"digest": name}
            if name in used:
                kept.append(dict(light(meta) or {}, used_by=used[name]))
                continue
            removed.append(dict(light(meta) or {}))
            if not header.get("dry_run"):
                shutil.rmtree(path, ignore_errors=True)
        elif name.startswith(TMP_PREFIX) and not header.get("dry_run"):
            digest = name[len(TMP_PREFIX) :].split("-", 1)[0]
            with _try_lock(digest) as free:
                if free:
                    shutil.rmtree(path, ignore_errors=True)
    return {"removed": removed, "kept": kept}, b""


@contextlib.contextmanager
def _try_lock(digest: str) -> Any:
    fd = os.open(os.path.join(envs_dir(), ".lock-" + digest), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


# ---- jobs and kernels -----------------------------------------------------------------


def for_job(header: Dict[str, Any]) -> Dict[str, Any]:
    """Record fields that put a job (or kernel) in its env; {} when it names none.

    OpError "noenv" when the env is not built (the client builds it and asks again)."""
    digest = header.get("env_digest")
    if digest:
        if not isinstance(digest, str) or not DIGEST_RE.match(digest):
            raise OpError(ErrorKind.BADSPEC, "bad env digest %r" % (digest,))
        meta = read_meta(digest)
        if meta is None:
            raise OpError(ErrorKind.NOENV, "env %s is gone from this host (pruned?)" % digest)
    elif header.get("env_spec") is not None:
        digest, meta, _ = resolve(check_spec(header["env_spec"]))
        if meta is None:
            raise OpError(ErrorKind.NOENV, "the env for this spec is not built on this host")
        remember(header.get("root"), digest)
    else:
        return {}
    path = os.path.join(envs_dir(), digest)
    python = os.path.join(path, "bin", "python")
    return {
        "env_digest": digest,
        "env_path": path,
        "path_prefix": [os.path.join(path, "bin")],
        "virtual_env": path,
        "python_executable": python,
        "python_path": python,
        "python_version": meta.get("python_version"),
        "packages": meta.get("packages"),
    }


def register(agent: Any) -> None:
    """Add the env ops to the agent (env_sync streams, so it is given the agent's send)."""
    agent.handlers[Op.ENV_SYNC.value] = lambda header, payload: env_sync(
        header, lambda frame: agent.send(frame, flush=True)
    )
    agent.add(env_status, env_prune)
