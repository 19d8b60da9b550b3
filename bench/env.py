"""`tether env sync` for a small requirement set: cold and warm, uv and the pip fallback.

One sandbox whose python is the system's (/usr/bin/python3); the project's requirements.txt
names a few small pure-Python packages (ipykernel is added, as always). Measured:

- cold, uv: nothing on the remote (no tether uv, no uv cache, no env): fetch uv, build;
- warm cache, uv: tether's uv and its cache are there, the env is not (a new spec);
- cold, pip: TETHER_ENV_BUILDER=pip, no pip cache, no env (`python -m venv` + pip);
- offline: `env sync --offline`, no env and no pushed wheels there: `pip download` here
  for the remote's platform (pip's local cache warm after the first run), the wheels
  pushed, the env built with no index (tether's uv already there);
- no change: the env is there; `env sync` is one round trip (next to `ssh HOST true`).

Medians of --runs (default 3; --small: 1) runs, each after removing what "cold" says.

    .venv/bin/python bench/env.py [--small] [--runs N] [--results bench/RESULTS.md]
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

PACKAGES = ("tabulate==0.9.0", "iniconfig==2.0.0", "packaging==24.1", "attrs==24.2.0")
RUNS = 3


def main(argv: list[str] | None = None) -> int:
    args = common.arguments(__doc__ or "", argv)
    runs = args.runs or (1 if args.small else RUNS)
    tether = common.tether_bin()
    with common.isolated() as isolation, common.sandbox("bench-env") as box:
        project = isolation.home / "bench-env-project"
        project.mkdir()
        (project / "requirements.txt").write_text("".join(p + "\n" for p in PACKAGES))
        common.git_init(project)
        common.write_config(
            project / "tether.toml",
            f'[targets.box]\nhost = "{box.name}"\npath = "~/bench-env"\n'
            'python = "/usr/bin/python3"\ndefault = true\n',
        )
        cache = Path(box.home) / ".cache"
        common.start_master(box.name)
        common.run([tether, "push"], cwd=project)  # the agent is installed, the master open

        def clear(*names: str) -> None:
            for name in names:
                shutil.rmtree(cache / name, ignore_errors=True)

        def sync(builder: str = "auto") -> None:
            env = {"TETHER_ENV_BUILDER": builder}
            common.run([tether, "env", "sync"], cwd=project, timeout=1200, env=env)

        envs = "tether/envs"
        cold_uv = common.median_of(runs, sync, lambda: clear(envs, "tether/uv", "tether/uv-cache"))
        warm_uv = common.median_of(runs, sync, lambda: clear(envs))
        cold_pip = common.median_of(runs, lambda: sync("pip"), lambda: clear(envs, "pip"))
        offline = common.median_of(
            runs,
            lambda: common.run([tether, "env", "sync", "--offline"], cwd=project, timeout=1200),
            lambda: clear(envs, "tether/wheels"),
        )
        sync()
        unchanged = common.side_by_side(
            max(runs, 5),
            {
                "env sync": sync,
                "ssh true": lambda: common.run(["ssh", *common.master_options(), box.name, "true"]),
            },
        )
        common.stop_master(box.name)
    table = common.Table(
        f"tether env sync: {len(PACKAGES)} small packages + ipykernel, system python",
        ["case", "seconds", "vs cold uv"],
    )
    cases = [
        ("cold, uv (fetch uv, empty cache)", cold_uv),
        ("warm uv cache, new env", warm_uv),
        ("cold, venv + pip fallback", cold_pip),
        ("offline: download here, push, build (no index there)", offline),
        ("no change (env there)", unchanged["env sync"]),
        ("`ssh HOST true`, same master", unchanged["ssh true"]),
    ]
    for label, timing in cases:
        table.rows.append(
            [label, common.seconds(timing.median), common.ratio(timing.median, cold_uv.median)]
        )
    table.notes.append(
        f"median of {runs} runs (no change: {max(runs, 5)}, interleaved with ssh true); "
        f"spread cold uv {cold_uv.spread()} s, cold pip {cold_pip.spread()} s"
    )
    measures = [
        common.Measure(label, 0, timing.median, cold_uv.median, "cold uv", runs=len(timing.samples))
        for label, timing in cases
    ]
    common.report([table], args.results, "bench/env.py", measures, "env", common.variant_of(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
