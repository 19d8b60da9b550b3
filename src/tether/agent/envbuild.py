"""Building one remote env: the installer (uv, else venv + pip), its index, its output.

uv is tether's own copy, never the system's: the `uv` wheel is fetched from the package
index the remote can reach (the same index pip there uses: pip.conf, PIP_INDEX_URL,
UV_INDEX_URL, or the project's `[env] index_url`) with urllib, which trusts the system's
certificate store, and its binary is unpacked into ~/.cache/tether/uv/VERSION/. uv itself is
told to use the system store too (UV_NATIVE_TLS): behind a TLS-inspecting proxy its bundled
roots fail where pip works. Where uv cannot be had, `python -m venv` and pip build the env.
Installer output streams line by line to `say`; `cancelled` is polled while it runs, so a
dropped link stops the build. Standard library only, Python >= 3.8.
"""

from __future__ import annotations

import collections
import configparser
import contextlib
import os
import re
import select
import shutil
import signal
import subprocess
import time
import zipfile
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import uvget
from .fsops import OpError

DEFAULT_INDEX = "https://pypi.org/simple"
PIP_KEYS = ("index-url", "extra-index-url", "find-links", "trusted-host", "cert")
Say = Callable[[str], None]
Cancelled = Callable[[], bool]


class BuildFailed(OpError):
    """An installer failed; `tail` holds its last lines."""

    def __init__(self, message: str, tail: Optional[List[str]] = None) -> None:
        super().__init__("envbuild", message)
        self.tail = list(tail or [])


class Hangup(Exception):
    """The client went away in the middle of a build."""


# ---- the remote's pip configuration --------------------------------------------------


def pip_config_files(environ: Dict[str, str]) -> List[str]:
    """pip's config files in the order pip reads them (later ones win)."""
    xdg = environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    files = ["/etc/pip.conf", "/etc/xdg/pip/pip.conf"]
    files += [os.path.expanduser("~/.pip/pip.conf"), os.path.join(xdg, "pip", "pip.conf")]
    if environ.get("PIP_CONFIG_FILE"):
        files.append(environ["PIP_CONFIG_FILE"])
    return files


def pip_settings(environ: Dict[str, str]) -> Dict[str, List[str]]:
    """index-url, extra-index-url, find-links, trusted-host, cert as pip would use them."""
    settings: Dict[str, List[str]] = {}
    for path in pip_config_files(environ):
        parser = configparser.RawConfigParser()
        try:
            parser.read(path, encoding="utf-8")
        except (configparser.Error, OSError, UnicodeDecodeError):
            continue
        for section in ("global", "install"):
            for key in PIP_KEYS:
                if parser.has_option(section, key):
                    settings[key] = parser.get(section, key).split()
    for key in PIP_KEYS:
        value = environ.get("PIP_" + key.upper().replace("-", "_"))
        if value:
            settings[key] = value.split()
    return settings


def index_of(settings: Dict[str, List[str]], environ: Dict[str, str], index_url: str) -> str:
    """The index to fetch uv from: the project's, uv's, pip's, else PyPI."""
    for value in (index_url, environ.get("UV_DEFAULT_INDEX"), environ.get("UV_INDEX_URL")):
        if value:
            return value
    return (settings.get("index-url") or [DEFAULT_INDEX])[0]


def uv_index_args(
    settings: Dict[str, List[str]], environ: Dict[str, str], index_url: str
) -> List[str]:
    """uv's flags for the index pip uses there (uv reads no pip.conf); UV_* env vars stay uv's."""
    args: List[str] = []
    own = environ.get("UV_DEFAULT_INDEX") or environ.get("UV_INDEX_URL")
    if index_url:
        args += ["--index-url", index_url]
    elif settings.get("index-url") and not own:
        args += ["--index-url", settings["index-url"][0]]
    for url in settings.get("extra-index-url", []):
        args += ["--extra-index-url", url]
    for link in settings.get("find-links", []):
        args += ["--find-links", link]
    for host in settings.get("trusted-host", []):
        args += ["--allow-insecure-host", host]
    return args


def installer_env(settings: Dict[str, List[str]], environ: Dict[str, str]) -> Dict[str, str]:
    """The environment both installers run with: the system trust store, tether's cache."""
    env = dict(environ)
    for variable in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "CONDA_PREFIX"):
        env.pop(variable, None)
    env["UV_CACHE_DIR"] = os.path.join(uvget.cache_root(), "uv-cache")
    env["UV_NO_PROGRESS"] = "1"
    env.setdefault("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    if settings.get("cert") and not env.get("SSL_CERT_FILE"):
        env["SSL_CERT_FILE"] = settings["cert"][0]
    return env


# ---- uv: tether's own (tether_agent.uvget), fetched from the remote's index ----------


def get_uv(
    settings: Dict[str, List[str]], environ: Dict[str, str], index_url: str, say: Say
) -> str:
    """tether's uv: the one unpacked before, else fetched now (OSError / ValueError why not)."""
    found = uvget.own_uv()
    if found:
        return found
    cafile = (settings.get("cert") or [environ.get("SSL_CERT_FILE", "")])[0] or None
    return uvget.fetch_uv(index_of(settings, environ, index_url), cafile, say)


# ---- running an installer ------------------------------------------------------------


def run_streamed(
    argv: List[str], env: Dict[str, str], say: Say, cancelled: Cancelled, cwd: Optional[str] = None
) -> Tuple[int, List[str]]:
    """Run argv, each output line to say(); (exit code, the last lines). Hangup if cancelled."""
    tail: Any = collections.deque(maxlen=40)
    process = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env=env, cwd=cwd, start_new_session=True,
    )  # fmt: skip
    assert process.stdout is not None
    pending = b""
    try:
        while True:
            ready, _, _ = select.select([process.stdout], [], [], 0.25)
            if not ready:
                if cancelled():
                    raise Hangup()
                continue
            chunk = os.read(process.stdout.fileno(), 1 << 16)
            if not chunk:
                break
            lines = (pending + chunk).replace(b"\r", b"\n").split(b"\n")
            pending = lines.pop()
            for raw in lines:
                line = raw.decode("utf-8", "replace").rstrip()
                if line.strip():
                    tail.append(line)
                    say(line)
        if pending.strip():
            tail.append(pending.decode("utf-8", "replace").rstrip())
        process.wait()
    except BaseException:
        _end(process)
        raise
    finally:
        process.stdout.close()
    return process.returncode, list(tail)


def _end(process: Any) -> None:
    """Stop an installer and everything it started (its own session)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(OSError):
            os.killpg(process.pid, sig)
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        if process.poll() is not None:
            return


# Where installers name the package they failed on (uv's and pip's words).
_FAILING = (
    r"no version of ([A-Za-z0-9_.\-\[\]]+(?:[=<>!~]=?[^\s,]+)?)",
    r"Because ([A-Za-z0-9_.\-]+) was not found in the package registry",
    r"Failed to (?:build|download|fetch|prepare distributions?)[^`]*`([^`]+)`",
    r"No matching distribution found for (\S+)",
    r"Could not find a version that satisfies the requirement (\S+)",
    r"Failed (?:to build|building wheel for) (\S+)",
)


def failing_package(tail: List[str]) -> Optional[str]:
    """The package an installer's output blames, if it names one."""
    text = "\n".join(tail)
    for pattern in _FAILING:
        match = re.search(pattern, text)
        if match:
            return match.group(1)
    return None


def last_words(tail: List[str], count: int = 2) -> str:
    """The installer's last meaningful lines, joined into one (box-drawing removed)."""
    cleaned = []
    for line in tail:
        text = re.sub(r"[\u2500-\u257f\u2190-\u21ff\u00d7]+", " ", line).strip(" :")
        text = " ".join(text.split())
        if text and not text.startswith(("help", "hint", "note")):
            cleaned.append(text)
    return "; ".join(cleaned[-count:])


def check_run(step: str, result: Tuple[int, List[str]]) -> None:
    code, tail = result
    if code == 0:
        return
    package = failing_package(tail)
    where = "%s failed on %s" % (step, package) if package else "%s failed (exit %d)" % (step, code)
    raise BuildFailed("%s: %s" % (where, last_words(tail) or "no output"), tail)


# ---- the two builders ----------------------------------------------------------------


def system_certs(env: Dict[str, str], version: str) -> None:
    """Tell uv to trust the system's store (its own name for that changed in 0.11)."""
    try:
        newer = uvget.version_key(version) >= (0, 11)
    except ValueError:
        newer = True
    env["UV_SYSTEM_CERTS" if newer else "UV_NATIVE_TLS"] = "1"


def build_with_uv(uv: str, job: Dict[str, Any]) -> None:
    """A relocatable venv made by uv, the spec installed into it (with ipykernel)."""
    say, cancelled, env = job["say"], job["cancelled"], dict(job["env"])
    system_certs(env, os.path.basename(os.path.dirname(uv)))
    target, spec_dir = job["target"], job["spec_dir"]
    argv = [uv, "venv", "--relocatable", "--python", job["base"], target]
    argv += ["--offline"] if job.get("offline") else []
    check_run("uv venv", run_streamed(argv, env, say, cancelled, cwd=spec_dir))
    requirements = list(job["requirements"])
    if job["kind"] == "uv.lock":
        exported = os.path.join(spec_dir, "tether-exported.txt")
        argv = [
            uv,
            "export",
            "--frozen",
            "--no-hashes",
            "--no-emit-project",
            "--format",
            "requirements-txt",
            "-o",
            exported,
        ]
        for extra in job["extras"]:
            argv += ["--extra", extra]
        check_run("uv export (uv.lock)", run_streamed(argv, env, say, cancelled, cwd=spec_dir))
        requirements = [exported]
    argv = [
        uv,
        "pip",
        "install",
        "--compile-bytecode",
        "--python",
        os.path.join(target, "bin", "python"),
    ]
    argv += (["--offline"] if job.get("offline") else []) + job["index_args"]
    for name in requirements:
        argv += ["-r", name]
    check_run(
        "uv pip install", run_streamed([*argv, "ipykernel"], env, say, cancelled, cwd=spec_dir)
    )


def build_with_pip(job: Dict[str, Any]) -> None:
    """`python -m venv`, then pip installs the spec (with ipykernel)."""
    say, cancelled, env = job["say"], job["cancelled"], job["env"]
    if job["kind"] == "uv.lock":
        raise BuildFailed("uv.lock needs uv, which cannot be had here: %s" % job["uv_problem"])
    base = job["base"]
    if re.match(r"3(\.\d+)*\Z", base):
        found = shutil.which("python" + base)
        if not found:
            raise BuildFailed(
                "no python%s on this host (and no uv to fetch one: %s)" % (base, job["uv_problem"])
            )
        base = found
    code, tail = run_streamed([base, "-m", "venv", job["target"]], env, say, cancelled)
    if code != 0:
        raise BuildFailed(
            "neither uv (%s) nor `%s -m venv` (%s) can make an env here"
            % (job["uv_problem"], base, last_words(tail, 1) or "exit %d" % code),
            tail,
        )
    argv = [os.path.join(job["target"], "bin", "python"), "-m", "pip", "install", "--no-input"]
    if job.get("offline"):
        argv += job["index_args"]
    elif job["index_url"]:
        argv += ["--index-url", job["index_url"]]
    for name in job["requirements"]:
        argv += ["-r", name]
    check_run(
        "pip install", run_streamed([*argv, "ipykernel"], env, say, cancelled, cwd=job["spec_dir"])
    )


def build(job: Dict[str, Any], prefer: str) -> Dict[str, Any]:
    """Build into job["target"] with uv (prefer "uv" or "auto") or pip; the builder used."""
    environ = dict(os.environ)
    settings = pip_settings(environ)
    job["env"] = installer_env(settings, environ)
    job["index_args"] = uv_index_args(settings, environ, job["index_url"])
    job["uv_problem"] = "not tried"
    found: Optional[str] = None
    if job.get("offline"):  # the pushed wheels only; uv is tether's own or a pushed wheel's
        from .envwheels import offline_index_args, offline_uv

        job["index_args"] = offline_index_args()
        found = offline_uv() if prefer != "pip" else None
        if found is None and prefer == "uv":
            raise BuildFailed("no uv on this host and none among the pushed wheels")
        job["uv_problem"] = "offline, and no uv among the pushed wheels"
        prefer = "uv" if found else "pip"
    if prefer != "pip":
        try:
            uv = found or get_uv(settings, environ, job["index_url"], job["say"])
        except (OSError, ValueError, StopIteration, zipfile.BadZipFile) as error:
            job["uv_problem"] = "uv could not be fetched: %s" % (error,)
            if prefer == "uv":
                raise BuildFailed(job["uv_problem"]) from None
            job["say"]("%s; falling back to venv + pip" % job["uv_problem"])
        else:
            build_with_uv(uv, job)
            return {"builder": "uv", "builder_version": os.path.basename(os.path.dirname(uv))}
    build_with_pip(job)
    return {"builder": "pip", "builder_version": None}
