#!/usr/bin/env python
"""Run many ``recipes/prune.py`` runs as one campaign: N concurrent workers, a wall-clock budget, resume, packing.

GPU time here comes in short leases (commands of at most 10 minutes, a machine held for at
most 30, results back as at most 8 files of 16 MiB), so a campaign is built to be fired
once, left running detached, polled, and packed:

    python recipes/campaign.py run    recipes/campaigns/cpu_smoke.yaml     # in the foreground
    python recipes/campaign.py start  recipes/campaigns/gpu_zoo_vgg19.yaml # detached (setsid), returns at once
    python recipes/campaign.py status recipes/campaigns/gpu_zoo_vgg19.yaml --wait 540   # poll
    python recipes/campaign.py stop   recipes/campaigns/gpu_zoo_vgg19.yaml # stop now, checkpointing every run
    python recipes/campaign.py collect recipes/campaigns/gpu_zoo_vgg19.yaml --out $OUT  # <= 8 x 16 MiB tar.gz
    python recipes/campaign.py unpack $OUT/*.tar.gz --dest restored/       # folders fggp_hub.load accepts
    python recipes/campaign.py probe --model fggp_vgg19_bn_cifar           # GPU step time: compile, N processes

``start`` is ``setsid nohup python recipes/campaign.py run CAMPAIGN >> ROOT/campaign.log 2>&1 &``.

A campaign file (YAML) lists runs, each a recipe plus overrides (any ``--section.key`` of the
runner), and the campaign's settings::

    name: cpu_smoke
    output_root: runs/campaigns/cpu_smoke   # relative to the working directory
    workers: 2                              # runs at a time, all on the one device
    budget_s: 600                           # seconds of one invocation, from its first launch (0: none)
    defaults: {tracker: null, data.train_subset: 512}   # every run; a run's own overrides win
    runs:
      - name: fggp-s90                      # recipe paths are relative to the campaign file
        recipe: ../quick_cpu.yaml
        overrides: {seed: 0, export.name: resnet20-cifar10-s90-smoke}
      - recipe: ../study_resnet20_cifar10.yaml
        name: "{method}-s{sparsity}-seed{seed}"      # templates: method, sparsity, seed, model
        grid: {seed: [0, 1], pruning.method: [fggp, gmp]}   # the first key varies slowest

Each run is ``python recipes/prune.py --recipe R --output-dir ROOT/runs/NAME [--resume auto]
OVERRIDES`` with its log in ``ROOT/logs/NAME.log``. At the budget every worker gets SIGINT:
the runner stops at the next optimizer step, writes a checkpoint and exits 130. Invoking the
campaign again resumes each unfinished run from its newest complete checkpoint (``--resume
auto``, bit-exact: same masks as an uninterrupted run), starts the ones never started, and
skips the finished ones (``results.json`` and, when exporting, the export folder).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import io
import itertools
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

import yaml

HERE = Path(__file__).resolve().parent
RUNNER = HERE / "prune.py"
MiB = 1024 * 1024
STATE_FILE = "campaign.json"
LOCK_FILE = ".campaign.lock"
EXIT_UNFINISHED = 75  # EX_TEMPFAIL: stopped at the budget with runs left; invoke again to resume them
_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_CAMPAIGN_KEYS = {"name", "description", "output_root", "workers", "budget_s", "grace_s", "stop_timeout_s",
                  "start_cutoff_s", "defaults", "runs"}
_RUN_KEYS = {"name", "recipe", "overrides", "grid"}
# tqdm's bar as the runner prints it: "train:  12%|#2      | 15/125 [...]"
_BAR = re.compile(r"train:\s*\d+%\|[^|\r\n]*\|\s*(\d+)/(\d+)")


class CampaignError(Exception):
    """A campaign file, a run folder or a pack is unusable (the message says which and why)."""


# --------------------------------------------------------------------------------------- campaign file
@dataclasses.dataclass
class RunSpec:
    """One run: the recipe, its overrides (dotted keys, merged), and where it writes."""

    name: str
    recipe: Path
    overrides: dict[str, Any]
    out_dir: Path
    log: Path
    cfg: Any = None  # the Recipe as the runner will resolve it (fggp_hub.recipes.Recipe)

    def override_args(self) -> list[str]:
        return [f"--{key}={_cli_value(value)}" for key, value in self.overrides.items()]

    def argv(self, resume: bool) -> list[str]:
        """The runner's arguments: fresh runs start without --resume (the runner refuses --resume auto on no checkpoint)."""
        args = ["--recipe", str(self.recipe), f"--output-dir={self.out_dir}", *self.override_args()]
        return args + (["--resume", "auto"] if resume else [])

    @property
    def export_dir(self) -> Path | None:
        """The run's export folder, or None when its recipe does not export."""
        from fggp_hub.recipes import default_export_name

        if not self.cfg.export.enabled:
            return None
        return self.out_dir / "export" / (self.cfg.export.name or default_export_name(self.cfg))


@dataclasses.dataclass
class Campaign:
    name: str
    path: Path
    output_root: Path
    workers: int
    budget_s: float  # 0: no budget; counted from the first launch (after the data cache is filled)
    grace_s: float  # after the budget: how long a worker still starting up may take to reach training
    stop_timeout_s: float  # after SIGINT: how long a worker may take to checkpoint and exit
    start_cutoff_s: float  # no run is started in the last seconds of the budget
    runs: list[RunSpec]

    @property
    def state_path(self) -> Path:
        return self.output_root / STATE_FILE


def _cli_value(value: Any) -> str:
    """A value as the runner parses it back (YAML): strings that YAML would change are quoted."""
    if isinstance(value, str):
        try:
            same = yaml.safe_load(value) == value
        except yaml.YAMLError:
            same = False
        return value if same and value != "" else json.dumps(value)
    if value is None or isinstance(value, (bool, list, dict)):
        return json.dumps(value)
    return repr(value)


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"epochs": 2}}`` and ``{"train.epochs": 2}`` both give ``{"train.epochs": 2}``."""
    out: dict[str, Any] = {}
    for key, value in (data or {}).items():
        full = f"{prefix}{key}"
        if isinstance(value, dict) and full != "model_args":
            out.update(_flatten(value, f"{full}."))
        else:
            out[full] = value
    return out


def _sparsity_tag(sparsity: float) -> str:
    """0.95 -> ``95``, 0.995 -> ``99p5`` (the zoo's sparsity field)."""
    percent = round(float(sparsity) * 100, 3)
    if abs(percent - round(percent)) < 1e-9:
        return str(int(round(percent)))
    return f"{percent:.3f}".rstrip("0").replace(".", "p")


def _format(template: Any, context: dict[str, Any], where: str) -> Any:
    if not isinstance(template, str) or "{" not in template:
        return template
    try:
        return template.format(**context)
    except (KeyError, IndexError, ValueError) as e:
        raise CampaignError(f"{where}: template {template!r} names {e}; use {', '.join(sorted(context))}") from None


def load_campaign(path: str | Path, *, output_root: str | Path | None = None, workers: int | None = None,
                  budget_s: float | None = None, sets: dict[str, Any] | None = None) -> Campaign:
    """Read and expand a campaign file; every run's recipe is checked by the runner's own loader.

    ``sets`` (``--set KEY=VALUE``) apply to every run and win over the file: they are how one
    invocation changes, say, ``train.compile`` without editing the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CampaignError(f"campaign file {str(path)!r} not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise CampaignError(f"campaign file {str(path)!r} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list) or not data["runs"]:
        raise CampaignError(f"{path}: needs a list 'runs' (each with a recipe and overrides)")
    unknown = set(data) - _CAMPAIGN_KEYS
    if unknown:
        raise CampaignError(f"{path}: unknown campaign key(s) {sorted(unknown)}; known: {sorted(_CAMPAIGN_KEYS)}")
    name = str(data.get("name") or path.stem)
    if not _NAME_OK.match(name):
        raise CampaignError(f"{path}: name {name!r} must be letters, digits, '.', '_' or '-'")
    root = Path(output_root or data.get("output_root") or Path("runs") / "campaigns" / name)
    defaults = _flatten(data.get("defaults") or {})
    sets = _flatten(sets or {})

    from fggp_hub.recipes import RecipeError, load_recipe

    runs: list[RunSpec] = []
    for index, entry in enumerate(data["runs"]):
        where = f"{path}: runs[{index}]"
        if not isinstance(entry, dict) or "recipe" not in entry:
            raise CampaignError(f"{where}: each run needs 'recipe' (a path relative to the campaign file)")
        unknown = set(entry) - _RUN_KEYS
        if unknown:
            raise CampaignError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(_RUN_KEYS)}")
        recipe = Path(entry["recipe"])
        recipe = recipe if recipe.is_absolute() else (path.parent / recipe)
        recipe = Path(os.path.normpath(recipe))
        if not recipe.is_file():
            raise CampaignError(f"{where}: recipe {str(recipe)!r} not found (paths are relative to the campaign file)")
        grid = _flatten(entry.get("grid") or {})
        for key, values in grid.items():
            if not isinstance(values, list) or not values:
                raise CampaignError(f"{where}: grid.{key} must be a non-empty list")
        own = _flatten(entry.get("overrides") or {})
        for combo in itertools.product(*grid.values()) if grid else [()]:
            merged = {**defaults, **dict(zip(grid, combo)), **own, **sets}
            plain = {k: v for k, v in merged.items() if not (isinstance(v, str) and "{" in v)}
            context: dict[str, Any] = {k.rsplit(".", 1)[-1]: v for k, v in plain.items()}
            try:
                cfg = load_recipe(recipe, [f"--{k}={_cli_value(v)}" for k, v in plain.items()])
            except RecipeError as e:
                raise CampaignError(f"{where}: {e}") from None
            context.update(method=cfg.pruning.method, sparsity=_sparsity_tag(cfg.pruning.final_sparsity),
                           seed=cfg.seed, model=cfg.model)
            run_name = _format(entry.get("name") or "{method}-s{sparsity}-seed{seed}", context, where)
            overrides = {k: _format(v, context, where) for k, v in merged.items()}
            if "output_dir" in overrides or "resume" in overrides:
                raise CampaignError(f"{where}: output_dir and resume are set by the campaign")
            if not _NAME_OK.match(str(run_name)):
                raise CampaignError(f"{where}: run name {run_name!r} must be letters, digits, '.', '_' or '-'")
            run = RunSpec(str(run_name), recipe, overrides, root / "runs" / str(run_name), root / "logs" / f"{run_name}.log")
            try:
                run.cfg = load_recipe(recipe, run.override_args())
            except RecipeError as e:
                raise CampaignError(f"{where} ({run_name}): {e}") from None
            runs.append(run)
    names = [r.name for r in runs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise CampaignError(f"{path}: run names must be unique, repeated: {duplicates} (add the varying key to 'name')")
    campaign = Campaign(
        name=name, path=path, output_root=root,
        workers=int(workers if workers is not None else data.get("workers", 1)),
        budget_s=float(budget_s if budget_s is not None else data.get("budget_s") or 0),
        grace_s=float(data.get("grace_s", 120)), stop_timeout_s=float(data.get("stop_timeout_s", 300)),
        start_cutoff_s=float(data.get("start_cutoff_s", 60)), runs=runs)
    if campaign.workers < 1:
        raise CampaignError(f"{path}: workers must be >= 1, got {campaign.workers}")
    return campaign


# ------------------------------------------------------------------------------------------ run folders
def _complete_checkpoints(out_dir: Path) -> list[Path]:
    """Checkpoint folders with model, optimizer and our registered state, oldest first.

    Works for both the runner's step-named checkpoints (``step_000640``) and accelerate's
    automatic ones (``checkpoint_3``); saves in progress (``.partial-*``) are not counted.
    """
    root = out_dir / "checkpoints"
    found = []
    for folder in root.glob("*") if root.is_dir() else []:
        match = re.fullmatch(r"(?:step|checkpoint)_(\d+)", folder.name)
        if not match or not folder.is_dir():
            continue
        names = {p.name for p in folder.iterdir()}
        if (any(n.startswith(("model.safetensors", "pytorch_model")) for n in names)
                and any(n.startswith("optimizer") for n in names)
                and any(n.startswith("custom_checkpoint_") for n in names)):
            found.append((folder.name.startswith("step_"), int(match.group(1)), folder))
    return [f for *_, f in sorted(found)]


def disk_state(run: RunSpec) -> str:
    """``finished`` | ``resumable`` | ``fresh``, read from the run folder alone."""
    export_dir = run.export_dir
    if (run.out_dir / "results.json").is_file() and (export_dir is None or (export_dir / "config.json").is_file()):
        return "finished"
    return "resumable" if _complete_checkpoints(run.out_dir) else "fresh"


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def _progress(log: Path, tail_bytes: int = 65536) -> tuple[int, int] | None:
    """The last ``step/total`` the runner's bar printed in ``log``."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - tail_bytes))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    found = _BAR.findall(text)
    return (int(found[-1][0]), int(found[-1][1])) if found else None


def _pid_alive(pid: int | None, must_contain: str | None = None) -> bool:
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, PermissionError, ValueError):
        return False
    if must_contain:  # a reused pid is not our process
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            return True
        return must_contain in cmdline
    return True


def _lock_held(root: Path) -> bool:
    """True while a ``run`` of this campaign holds its lock (an orchestrator is alive)."""
    path = root / LOCK_FILE
    if not path.exists():
        return False
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False


def _device_info() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        if out.returncode == 0 and out.stdout.strip():
            return "; ".join(line.strip() for line in out.stdout.strip().splitlines())
    except (OSError, subprocess.SubprocessError):
        pass
    return f"cpu: {os.cpu_count()} cores ({platform.processor() or platform.machine()})"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


# -------------------------------------------------------------------------------------- orchestrator
@dataclasses.dataclass
class _Worker:
    run: RunSpec
    proc: subprocess.Popen
    started: float
    record: dict
    log_offset: int
    first_step: int | None = None
    training: bool = False  # a step was taken after the bar appeared: the runner's stop handler is live
    signalled: float | None = None
    escalated: int = 0
    tail: str = ""


class Orchestrator:
    """Runs a campaign's unfinished runs, ``workers`` at a time, until done or the budget is spent.

    At the budget (or on SIGINT/SIGTERM to this process) each worker gets one SIGINT once it is
    training, so it checkpoints; a worker still starting up gets ``grace_s`` to reach training
    (a SIGINT before that would cost its start-up and leave no checkpoint). A worker that has
    not exited ``stop_timeout_s`` after its SIGINT gets a second one (immediate stop), then SIGKILL.
    """

    poll_s = 0.2

    def __init__(self, campaign: Campaign) -> None:
        self.c = campaign
        self.stop_reason: str | None = None
        self.hurry = False
        self.state: dict = {}

    def _log(self, message: str) -> None:
        print(f"[campaign {self.c.name} {time.strftime('%H:%M:%S')}] {message}", flush=True)

    def _save(self) -> None:
        _write_json_atomic(self.c.state_path, self.state)

    def _on_signal(self, signum, frame) -> None:
        if self.stop_reason is None:
            self.stop_reason = signal.Signals(signum).name
        else:  # a second signal: stop every worker now
            self.hurry = True

    def _prewarm_data(self, runs: list[RunSpec]) -> None:
        """Decode each dataset into the uint8 cache once, before N workers would each decode it."""
        seen = set()
        for run in runs:
            d = run.cfg.data
            key = (d.dataset, d.train_split, d.test_split, d.image_size, d.cache_dir)
            if d.streaming or key in seen:
                continue
            seen.add(key)
            started = time.perf_counter()
            try:
                from fggp_hub.data import load_cifar10, load_image_dataset

                for split in (d.train_split, d.test_split):
                    if d.dataset == "cifar10":
                        load_cifar10(split, image_size=d.image_size, cache_dir=d.cache_dir)
                    else:
                        load_image_dataset(d.dataset, split, image_size=d.image_size, cache_dir=d.cache_dir)
                self._log(f"data {d.dataset} ready in the cache ({time.perf_counter() - started:.1f} s)")
            except Exception as e:  # the workers will report it in their logs
                self._log(f"could not pre-decode {d.dataset}: {type(e).__name__}: {e}")

    def _check_no_orphans(self) -> None:
        for name, record in (self.state.get("runs") or {}).items():
            pid = record.get("pid")
            if record.get("state") == "running" and _pid_alive(pid, "prune.py"):
                raise CampaignError(f"run {name} is still running as pid {pid} (its campaign process died): "
                                    f"wait for it or stop it with: campaign.py stop {self.c.path}")

    def _launch(self, run: RunSpec, invocation: int) -> _Worker:
        checkpoints = _complete_checkpoints(run.out_dir)
        if not checkpoints and run.out_dir.exists() and any(run.out_dir.iterdir()):
            # A start that died before its first checkpoint: the runner refuses to start over a
            # non-empty folder without --resume, so set the leftovers aside (kept, never deleted).
            stale = self.c.output_root / "stale" / f"{run.name}-{time.strftime('%Y%m%d-%H%M%S')}"
            stale.parent.mkdir(parents=True, exist_ok=True)
            os.replace(run.out_dir, stale)
            self._log(f"{run.name}: no complete checkpoint; moved the leftover folder to {stale}")
        resume = bool(checkpoints)
        args = run.argv(resume)
        cmd = [sys.executable, str(RUNNER), *args]
        run.log.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if "OMP_NUM_THREADS" not in os.environ:  # N workers share the cores instead of each taking all
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // self.c.workers))
        with open(run.log, "ab") as log:
            log.write(f"\n===== campaign {self.c.name} invocation {invocation} {_now()}: "
                      f"{'resume from ' + checkpoints[-1].name if resume else 'fresh start'}\n"
                      f"{' '.join(cmd)}\n".encode())
            offset = log.tell()
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                    start_new_session=True)  # own group: a terminal's Ctrl-C reaches only us
        record = self.state["runs"].setdefault(run.name, {"segments": []})
        segment = {"invocation": invocation, "started": _now(), "started_unix": time.time(),
                   "resumed_from": checkpoints[-1].name if resume else None}
        record.update(state="running", pid=proc.pid, out_dir=str(run.out_dir), log=str(run.log))
        record["segments"].append(segment)
        self._save()
        self._log(f"{run.name}: {'resumed' if resume else 'started'} as pid {proc.pid}")
        return _Worker(run, proc, time.time(), segment, offset)

    def _watch(self, w: _Worker) -> None:
        """Read the worker's new log text; note when it has taken a step (its stop handler is then live)."""
        if w.training:
            return
        try:
            with open(w.run.log, "rb") as f:
                f.seek(w.log_offset)
                raw = f.read()
        except OSError:
            return
        w.log_offset += len(raw)
        text = w.tail + raw.decode("utf-8", "replace")
        w.tail = text[-200:]
        for step, _total in _BAR.findall(text):
            if w.first_step is None:
                w.first_step = int(step)
            elif int(step) > w.first_step:
                w.training = True

    def _signal(self, w: _Worker, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(w.proc.pid, sig)

    def _finish(self, w: _Worker, rc: int) -> str:
        on_disk = disk_state(w.run)
        if rc == 0 and on_disk == "finished":
            state = "finished"
        elif rc == 130 or (rc != 0 and w.signalled):  # resumes from its checkpoint, or starts over if none
            state = "interrupted"
        else:
            state = "failed"
        elapsed = time.time() - w.started
        progress = _progress(w.run.log)
        w.record.update(ended=_now(), ended_unix=time.time(), wall_s=round(elapsed, 2), rc=rc,
                        end_step=progress[0] if progress else None)
        record = self.state["runs"][w.run.name]
        record.update(state=state, rc=rc, pid=None)
        self._save()
        self._log(f"{w.run.name}: {state} (exit {rc}) after {elapsed:.0f} s"
                  + (f" at step {progress[0]}/{progress[1]}" if progress else ""))
        return state

    def run(self) -> int:
        """One invocation: returns 0 (all finished), 75 (stopped with runs to resume) or 1 (a run failed)."""
        c = self.c
        c.output_root.mkdir(parents=True, exist_ok=True)
        lock = open(c.output_root / LOCK_FILE, "a")
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        try:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise CampaignError(f"campaign {c.name} is already running in {c.output_root} "
                                    f"(see: campaign.py status {c.path})") from None
            self.state = _read_json(c.state_path) or {}
            self._check_no_orphans()
            self.state.update(campaign=c.name, campaign_file=str(c.path), output_root=str(c.output_root))
            self.state.setdefault("runs", {})
            invocation = len(self.state.setdefault("invocations", [])) + 1
            inv = {"invocation": invocation, "pid": os.getpid(), "host": socket.gethostname(), "started": _now(),
                   "workers": c.workers, "budget_s": c.budget_s, "device": _device_info(),
                   "python": sys.version.split()[0]}
            self.state["invocations"].append(inv)
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, self._on_signal)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a closed terminal does not end a campaign
            return self._run(invocation, inv, time.time())
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            lock.close()  # releases the lock

    def _run(self, invocation: int, inv: dict, started: float) -> int:
        c = self.c

        queue = []
        for run in c.runs:
            state = disk_state(run)
            if state == "finished":
                self.state["runs"].setdefault(run.name, {"segments": []}).update(state="finished", pid=None)
            else:
                queue.append(run)
        self._save()
        self._log(f"{len(c.runs) - len(queue)} of {len(c.runs)} runs finished; {len(queue)} to run, "
                  f"{c.workers} at a time, budget {c.budget_s:.0f} s, on {inv['device']}")
        if queue:
            self._prewarm_data(queue)
        # The budget runs from here, once the data is ready, so a budget always sees its runs start.
        deadline = time.time() + c.budget_s if c.budget_s > 0 else None
        running: list[_Worker] = []
        outcomes: dict[str, str] = {}
        stop_at = None
        try:
            while queue or running:
                now = time.time()
                if self.stop_reason is None and deadline is not None and now >= deadline:
                    self.stop_reason = "budget"
                if self.stop_reason is not None and stop_at is None:
                    stop_at = now
                    self._log(f"stopping ({self.stop_reason}): {len(running)} worker(s) checkpoint and exit; "
                              f"{len(queue)} run(s) not started")
                late = deadline is not None and now > deadline - c.start_cutoff_s
                while stop_at is None and not late and queue and len(running) < c.workers:
                    running.append(self._launch(queue.pop(0), invocation))
                if stop_at is not None and not running:
                    break
                for w in list(running):
                    self._watch(w)
                    rc = w.proc.poll()
                    if rc is not None:
                        running.remove(w)
                        outcomes[w.run.name] = self._finish(w, rc)
                        continue
                    if stop_at is None:
                        continue
                    if w.signalled is None and (w.training or self.hurry or now - stop_at >= c.grace_s):
                        w.signalled = now
                        self._signal(w, signal.SIGINT)
                        self._log(f"{w.run.name}: SIGINT" + ("" if w.training else " (still starting up)"))
                    elif w.signalled is not None:
                        waited = now - w.signalled
                        if w.escalated == 0 and (waited > c.stop_timeout_s or self.hurry):
                            w.escalated = 1
                            self._signal(w, signal.SIGINT)  # the runner's second Ctrl-C: stop at once
                            self._log(f"{w.run.name}: no exit {waited:.0f} s after SIGINT: second SIGINT")
                        elif w.escalated == 1 and waited > c.stop_timeout_s + 30:
                            w.escalated = 2
                            self._signal(w, signal.SIGKILL)
                            self._log(f"{w.run.name}: SIGKILL")
                if queue and stop_at is None and late and not running:
                    self.stop_reason = "budget"
                    continue
                time.sleep(self.poll_s)
        except BaseException:  # never leave workers running unsupervised: they checkpoint and exit
            for w in running:
                self._signal(w, signal.SIGINT)
            for w in running:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    w.proc.wait(timeout=c.stop_timeout_s)
            raise
        wall = time.time() - started
        unfinished = [r.name for r in c.runs if self.state["runs"].get(r.name, {}).get("state") != "finished"]
        failed = [name for name, state in outcomes.items() if state == "failed"]  # in this invocation
        inv.update(ended=_now(), wall_s=round(wall, 2), stop_reason=self.stop_reason or "done",
                   finished=len(c.runs) - len(unfinished), unfinished=len(unfinished))
        self._save()
        self._log(f"done in {wall:.0f} s: {len(c.runs) - len(unfinished)} finished, {len(failed)} failed, "
                  f"{len(unfinished) - len(failed)} to resume" + (f" (stopped: {self.stop_reason})" if self.stop_reason else ""))
        if failed:
            return 1
        return EXIT_UNFINISHED if unfinished else 0


# --------------------------------------------------------------------------------------- status / stop
def campaign_status(c: Campaign) -> dict:
    """The campaign as it stands: per run its state, progress, results; whether it is running."""
    state = _read_json(c.state_path) or {}
    alive = _lock_held(c.output_root)
    rows = []
    for run in c.runs:
        record = (state.get("runs") or {}).get(run.name, {})
        results = _read_json(run.out_dir / "results.json") if (run.out_dir / "results.json").is_file() else None
        on_disk = disk_state(run)
        if on_disk == "finished":
            status = "finished"
        elif record.get("state") == "running" and (alive or _pid_alive(record.get("pid"), "prune.py")):
            status = "running"
        elif record.get("state") == "failed":
            status = "failed"
        elif on_disk == "resumable":
            status = "interrupted"
        else:
            status = "pending"
        progress = _progress(run.log)
        segments = record.get("segments") or []
        rows.append({
            "name": run.name, "state": status,
            "step": progress[0] if progress else None, "total_steps": progress[1] if progress else None,
            "segments": len(segments), "wall_s": round(sum(s.get("wall_s") or 0 for s in segments), 1),
            "rc": record.get("rc"), "results": results,
        })
    invocations = state.get("invocations") or []
    return {"campaign": c.name, "output_root": str(c.output_root), "running": alive, "runs": rows,
            "invocations": invocations,
            "counts": {s: sum(r["state"] == s for r in rows) for s in ("finished", "running", "interrupted", "pending", "failed")}}


def _print_status(report: dict) -> None:
    counts = ", ".join(f"{n} {s}" for s, n in report["counts"].items() if n)
    print(f"campaign {report['campaign']} in {report['output_root']}: "
          f"{'RUNNING' if report['running'] else 'not running'}; {counts}")
    print(f"{'run':<44} {'state':<12} {'step':>15} {'top1':>7} {'sparsity':>9} {'wall':>8}")
    for r in report["runs"]:
        res = r["results"] or {}
        step = f"{r['step']}/{r['total_steps']}" if r["step"] is not None else "-"
        top1 = f"{res['top1']:.2f}" if res.get("top1") is not None else "-"
        sp = f"{res['sparsity']:.4f}" if res.get("sparsity") is not None else "-"
        print(f"{r['name']:<44} {r['state']:<12} {step:>15} {top1:>7} {sp:>9} {r['wall_s']:>7.0f}s")


def stop_campaign(c: Campaign) -> int:
    """SIGINT the campaign process (it stops every worker with a checkpoint); orphaned workers directly."""
    state = _read_json(c.state_path) or {}
    invocations = state.get("invocations") or []
    pid = invocations[-1].get("pid") if invocations else None
    if _lock_held(c.output_root) and _pid_alive(pid, "campaign.py"):
        os.kill(pid, signal.SIGINT)
        print(f"sent SIGINT to campaign process {pid}: every worker checkpoints and exits; "
              f"follow with: campaign.py status {c.path} --wait 300")
        return 0
    stopped = 0
    for name, record in (state.get("runs") or {}).items():
        if record.get("state") == "running" and _pid_alive(record.get("pid"), "prune.py"):
            os.kill(record["pid"], signal.SIGINT)
            print(f"sent SIGINT to orphaned worker {record['pid']} ({name})")
            stopped += 1
    if not stopped:
        print(f"campaign {c.name} is not running")
    return 0


# ------------------------------------------------------------------------------------------- summary
def summarize(c: Campaign) -> dict:
    """Per run: top-1, sparsity, wall time, steps/s; per campaign: invocations, device, totals."""
    report = campaign_status(c)
    rows = []
    for run, row in zip(c.runs, report["runs"]):
        res = row["results"] or {}
        cfg = run.cfg
        wall = res.get("train_wall_s")
        steps = res.get("optimizer_steps")
        rows.append({
            "name": run.name, "state": row["state"], "recipe": run.recipe.name,
            "model": cfg.model, "method": cfg.pruning.method, "target_sparsity": cfg.pruning.final_sparsity,
            "seed": cfg.seed,
            "top1": res.get("top1"), "best_top1_after_pruning": res.get("best_top1_after_pruning"),
            "sparsity": res.get("sparsity"), "optimizer_steps": steps if steps is not None else row["step"],
            "total_steps": res.get("total_steps") or row["total_steps"], "train_wall_s": wall,
            "steps_per_s": round(steps / wall, 2) if steps and wall else None,
            "campaign_wall_s": row["wall_s"], "segments": row["segments"], "mask_sha256": res.get("mask_sha256"),
        })
    invocations = report["invocations"]
    total_wall = sum(i.get("wall_s") or 0 for i in invocations)
    total_steps = sum(r["optimizer_steps"] or 0 for r in rows)
    return {
        "campaign": c.name, "campaign_file": str(c.path), "collected": _now(), "running": report["running"],
        "counts": report["counts"], "invocations": invocations,
        "device": invocations[-1].get("device") if invocations else _device_info(),
        "campaign_wall_s": round(total_wall, 1),
        "aggregate_steps_per_s": round(total_steps / total_wall, 2) if total_wall else None,
        "runs": rows,
    }


def summary_markdown(summary: dict) -> str:
    lines = [f"# Campaign {summary['campaign']}", "",
             f"Device: {summary['device']}. Campaign wall time {summary['campaign_wall_s'] / 60:.1f} min over "
             f"{len(summary['invocations'])} invocation(s); optimizer steps per second, all runs together: "
             f"{summary['aggregate_steps_per_s']}.", "",
             "| run | method | target | seed | state | top-1 (%) | best after pruning | sparsity | steps | train wall (min) | steps/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]

    def f(value, fmt):
        return format(value, fmt) if isinstance(value, (int, float)) else "-"

    for r in summary["runs"]:
        steps = f"{r['optimizer_steps']}/{r['total_steps']}" if r["optimizer_steps"] is not None else "-"
        wall = r["train_wall_s"] / 60 if r["train_wall_s"] else None
        lines.append(f"| {r['name']} | {r['method']} | {f(r['target_sparsity'], '.2f')} | {r['seed']} | {r['state']} | "
                     f"{f(r['top1'], '.2f')} | {f(r['best_top1_after_pruning'], '.2f')} | {f(r['sparsity'], '.4f')} | "
                     f"{steps} | {f(wall, '.1f')} | {f(r['steps_per_s'], '.1f')} |")
    if summary.get("left_out"):
        lines += ["", "Left out of the pack (size limits): " + ", ".join(summary["left_out"])]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------- packing
_Member = tuple[str, "Path | bytes"]  # (name inside the archive, file or content)


def _collapse_progress(raw: bytes) -> bytes:
    """A log with tqdm's carriage-return redraws reduced to the last state of each line."""
    lines = raw.decode("utf-8", "replace").split("\n")
    return "\n".join(next((p for p in reversed(line.split("\r")) if p.strip()), "") for line in lines).encode()


def _files_under(folder: Path, prefix: str, skip: Iterable[str] = ()) -> list[_Member]:
    """Files under ``folder`` except names in ``skip`` (``*.ext`` patterns too) and hidden ones (saves in progress)."""
    skip = set(skip)
    suffixes = tuple(s[1:] for s in skip if s.startswith("*"))
    return [(f"{prefix}/{p.relative_to(folder).as_posix()}", p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name not in skip and not (suffixes and p.name.endswith(suffixes))
            and not any(part.startswith(".") for part in p.relative_to(folder).parts)]


def _run_members(c: Campaign, run: RunSpec, with_checkpoint: bool) -> tuple[list[_Member], list[_Member]]:
    """(the run's results, card folder and log; its newest checkpoint when asked and unfinished)."""
    base = f"{c.name}/runs/{run.name}"
    members: list[_Member] = []
    for name in ("results.json", "recipe.resolved.yaml"):
        if (run.out_dir / name).is_file():
            members.append((f"{base}/{name}", run.out_dir / name))
    export = run.out_dir / "export"
    if export.is_dir():  # the compact checkpoint folder, not the dense model.safetensors
        members += _files_under(export, f"{base}/export", skip={"model.safetensors", "pytorch_model.bin", "*.onnx"})
    if run.log.is_file():
        members.append((f"{c.name}/logs/{run.log.name}", _collapse_progress(run.log.read_bytes())))
    checkpoint: list[_Member] = []
    if with_checkpoint and not (run.out_dir / "results.json").is_file():
        found = _complete_checkpoints(run.out_dir)
        if found:
            checkpoint = _files_under(found[-1], f"{base}/checkpoints/{found[-1].name}")
    return members, checkpoint


def _write_tar(target: "Path | io.BytesIO", members: list[_Member]) -> None:
    with tarfile.open(fileobj=target if isinstance(target, io.BytesIO) else None,
                      name=None if isinstance(target, io.BytesIO) else str(target), mode="w:gz",
                      compresslevel=6) as tar:
        for arcname, source in members:
            data = source.read_bytes() if isinstance(source, Path) else source
            info = tarfile.TarInfo(arcname)
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
            tar.addfile(info, io.BytesIO(data))


def _packed_size(members: list[_Member]) -> int:
    buf = io.BytesIO()
    _write_tar(buf, members)
    return buf.tell()


def collect(c: Campaign, out: Path, *, max_files: int = 8, max_bytes: int = 16 * MiB, max_total: int = 64 * MiB,
            checkpoints: bool = False, margin: int = 256 * 1024) -> dict:
    """Pack the campaign into at most ``max_files`` tar.gz shards of at most ``max_bytes`` each.

    What goes first: the summary (JSON + markdown, the campaign file and state, logs of the
    campaign process), then each run in campaign order (finished runs' cards and compact
    checkpoints, results, logs), then, with ``checkpoints``, the newest checkpoint of each
    unfinished run (to resume it on another machine). Whatever does not fit is named in the
    summary's ``left_out``; nothing is split across shards.
    """
    out.mkdir(parents=True, exist_ok=True)
    groups: list[tuple[str, list[_Member]]] = []
    later: list[tuple[str, list[_Member]]] = []
    for run in c.runs:
        members, checkpoint = _run_members(c, run, checkpoints)
        if members:
            groups.append((run.name, members))
        if checkpoint:
            later.append((f"{run.name} (checkpoint)", checkpoint))
    groups += later

    def summary_members(summary: dict) -> list[_Member]:
        members: list[_Member] = [(f"{c.name}/summary.json", json.dumps(summary, indent=2, default=str).encode()),
                                  (f"{c.name}/summary.md", summary_markdown(summary).encode()),
                                  (f"{c.name}/campaign.yaml", c.path.read_bytes())]
        for extra in sorted(c.output_root.glob("*")):
            if extra.is_file() and extra.suffix in (".json", ".log", ".md") and extra.name not in ("summary.json", "summary.md"):
                data = extra.read_bytes()
                members.append((f"{c.name}/{extra.name}", _collapse_progress(data) if extra.suffix == ".log" else data))
        return members

    summary = summarize(c)
    summary["left_out"] = [name for name, _ in groups]  # the largest the summary can be
    reserve = _packed_size(summary_members(summary)) + margin
    capacity = max_bytes - margin
    shards: list[list[_Member]] = [[]]
    sizes = [reserve]
    left_out = []
    for name, members in groups:
        size = _packed_size(members)
        slot = next((i for i, used in enumerate(sizes) if used + size <= capacity), None)
        if slot is None and len(shards) < max_files and size <= capacity and sum(sizes) + size + margin <= max_total:
            shards.append([])
            sizes.append(margin)
            slot = len(shards) - 1
        if slot is None or sum(sizes) + size > max_total:
            left_out.append(name)
            continue
        shards[slot] += members
        sizes[slot] += size
    summary["left_out"] = left_out
    summary["shards"] = len(shards)
    (c.output_root / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    (c.output_root / "summary.md").write_text(summary_markdown(summary))
    shards[0] = summary_members(summary) + shards[0]
    for stale in out.glob(f"{c.name}-*.tar.gz"):
        stale.unlink()
    paths = []
    for i, members in enumerate(shards):
        path = out / f"{c.name}-{i:02d}.tar.gz"
        _write_tar(path, members)
        if path.stat().st_size > max_bytes:
            raise CampaignError(f"{path} is {path.stat().st_size} bytes, over the {max_bytes} limit: "
                                "collect with a smaller --max-mib and report this")
        paths.append(path)
    summary["files"] = [{"path": str(p), "bytes": p.stat().st_size} for p in paths]
    return summary


def unpack(shards: list[Path], dest: Path, *, verify: bool = True) -> list[Path]:
    """Extract the shards into ``dest``; return the export folders, each checked with ``fggp_hub.load``."""
    dest.mkdir(parents=True, exist_ok=True)
    for shard in shards:
        with tarfile.open(shard, "r:gz") as tar:
            members = tar.getmembers()
            for m in members:
                parts = Path(m.name).parts
                if m.name.startswith("/") or ".." in parts or not (m.isfile() or m.isdir()):
                    raise CampaignError(f"{shard}: refusing member {m.name!r} (absolute, '..' or not a plain file)")
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, members=members, filter="data")
            else:  # pragma: no cover - Python without extraction filters
                tar.extractall(dest, members=members)
    folders = sorted(p.parent for p in dest.glob("*/runs/*/export/*/config.json"))
    if verify and folders:
        import fggp_hub

        for folder in folders:
            model = fggp_hub.load(folder)
            print(f"ok {folder}: sparsity {model.hub_info['sparsity']:.4f}, "
                  f"top1 {(model.hub_info.get('results') or {}).get('top1')}")
    return folders


# --------------------------------------------------------------------------------------------- probe
def probe_step_time(model: str = "fggp_vgg19_bn_cifar", *, device: str = "auto", batch_size: int = 64,
                    steps: int = 100, warmup: int = 20, compile_mode: str = "eager", channels_last: bool = True,
                    precision: str = "auto", method: str = "fggp", seed: int = 0,
                    barrier: tuple[str, int, int] | None = None) -> dict:
    """Time ``steps`` optimizer steps of the runner's training step on synthetic data already on the device.

    Mirrors ``recipes/prune.py``: accelerate (bf16 autocast), the device-side loader with its
    crop/flip augmentation, SGD Nesterov, the pruner's hooks, ``torch.compile`` of the forward.
    ``barrier`` = (folder, index, count): wait after warm-up until ``count`` processes are
    ready, so that concurrent processes time the same window.
    """
    import torch
    import torch.nn.functional as F
    import timm
    from accelerate import Accelerator

    import fggp_hub  # noqa: F401  (registers the CIFAR models)
    from fggp_hub.data import ImageTensors, make_loader
    from fggp_hub.pruning import CubicSchedule, Pruner

    on_gpu = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    precision = ("bf16" if on_gpu else "no") if precision == "auto" else precision
    accelerator = Accelerator(mixed_precision=precision, cpu=not on_gpu)
    dev = accelerator.device
    torch.manual_seed(seed)
    n = min(50_000, batch_size * (steps + warmup + 1))
    data = ImageTensors(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8),
                        torch.randint(0, 10, (n,)), tuple(str(i) for i in range(10))).to(dev)
    loader = make_loader(data, batch_size, train=True, device=dev, seed=seed, drop_last=True, channels_last=channels_last)
    net = timm.create_model(model, num_classes=10)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    net, optimizer = accelerator.prepare(net, optimizer)
    forward = net if compile_mode == "eager" else torch.compile(net, mode=None if compile_mode == "default" else compile_mode)
    schedule = CubicSchedule(total_steps=125_120, final_density=0.05, interval=2000, end_fraction=0.8)
    Pruner(net, optimizer, schedule=schedule, method=method, rate=0.5, seed=seed)

    def batches():
        for epoch in itertools.count():
            loader.set_epoch(epoch)
            yield from loader

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    it = batches()

    def step() -> None:
        images, labels = next(it)
        with accelerator.accumulate(net):
            loss = F.cross_entropy(forward(images), labels, label_smoothing=0.1)
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        scheduler.step()

    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    sync()
    warmup_s = time.perf_counter() - t0
    if barrier is not None:
        folder, index, count = barrier
        Path(folder, f"ready-{index}").touch()
        give_up = time.time() + 900
        while len(list(Path(folder).glob("ready-*"))) < count and time.time() < give_up:
            time.sleep(0.01)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    elapsed = time.perf_counter() - t0
    return {
        "model": model, "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({os.cpu_count()} cores)",
        "precision": precision, "compile": compile_mode, "channels_last": channels_last, "batch_size": batch_size,
        "steps": steps, "warmup_steps": warmup, "warmup_s": round(warmup_s, 2), "ms_per_step": round(1000 * elapsed / steps, 3),
        "steps_per_s": round(steps / elapsed, 2),
        "peak_mem_gib": round(torch.cuda.max_memory_allocated(dev) / 2**30, 2) if dev.type == "cuda" else None,
        "torch": torch.__version__,
    }


def _probe_processes(config: dict, count: int, timeout: float) -> dict:
    """Run ``count`` probe processes at once (one config), timing the same window; aggregate their throughput."""
    with tempfile.TemporaryDirectory(prefix="campaign-probe-") as folder:
        procs = []
        for i in range(count):
            cfg = dict(config, barrier=[folder, i, count] if count > 1 else None)
            env = dict(os.environ)
            if "OMP_NUM_THREADS" not in env:
                env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // count))
            procs.append(subprocess.Popen([sys.executable, __file__, "_probe_worker", json.dumps(cfg)], env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        results, errors = [], []
        deadline = time.time() + timeout
        for p in procs:
            try:
                out, err = p.communicate(timeout=max(1.0, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
                out, err = p.communicate()
                errors.append(f"timed out after {timeout:.0f} s")
                continue
            lines = [line for line in out.splitlines() if line.startswith("{")]
            if p.returncode == 0 and lines:
                results.append(json.loads(lines[-1]))
            else:
                errors.append((err or out).strip().splitlines()[-1] if (err or out).strip() else f"exit {p.returncode}")
    row = {"processes": count, "compile": config["compile_mode"], "channels_last": config["channels_last"]}
    if errors:
        return {**row, "error": "; ".join(errors)}
    row.update(results[0])
    row.update(processes=count, steps_per_s_total=round(sum(r["steps_per_s"] for r in results), 2),
               ms_per_step=round(sum(r["ms_per_step"] for r in results) / count, 3),
               steps_per_s=round(sum(r["steps_per_s"] for r in results) / count, 2))
    return row


def probe(args: argparse.Namespace) -> dict:
    """Step times per compile mode / memory format (one process), then N processes of the fastest."""
    base = dict(model=args.model, device=args.device, batch_size=args.batch_size, steps=args.steps, warmup=args.warmup,
                precision=args.precision, method=args.method)
    rows = []
    for mode in args.modes.split(","):
        for cl in (True, False) if args.channels_last == "both" else (args.channels_last == "true",):
            row = _probe_processes(dict(base, compile_mode=mode, channels_last=cl), 1, args.timeout)
            rows.append(row)
            print(json.dumps(row), flush=True)
    single = [r for r in rows if "error" not in r]
    best = max(single, key=lambda r: r["steps_per_s"]) if single else None
    if best is not None:
        for count in (int(n) for n in args.concurrency.split(",") if n.strip()):
            if count > 1:
                row = _probe_processes(dict(base, compile_mode=best["compile"], channels_last=best["channels_last"]),
                                       count, args.timeout)
                if "error" not in row:
                    row["gain_over_one"] = round(row["steps_per_s_total"] / best["steps_per_s"], 2)
                rows.append(row)
                print(json.dumps(row), flush=True)
    from fggp_hub.recipes import Recipe

    recommended: dict[str, Any] = {}
    eager = next((r for r in single if r["compile"] == "eager" and r["channels_last"] == (best or {}).get("channels_last")), None)
    default = next((r for r in single if r["compile"] == "default" and r["channels_last"] == (best or {}).get("channels_last")), None)
    if eager and default and "compile" in {f.name for f in dataclasses.fields(Recipe().train)}:
        recommended["train.compile"] = default["steps_per_s"] > eager["steps_per_s"]  # the runner's torch.compile(model)
    paper_steps = 125_120
    report = {
        "probed": _now(), "device": _device_info(), "rows": rows, "best_single": best,
        "recommended_set": recommended,
        "paper_protocol_minutes_alone": round(paper_steps / best["steps_per_s"] / 60, 1) if best else None,
        "note": "steps/s of training steps only (no evaluation, checkpoints or start-up); "
                "recommended_set: `campaign.py start CAMPAIGN --use-probe` applies it",
    }
    return report


def size_campaign(c: Campaign, *, seconds: float, pruning_steps: int = 50, safety: float = 0.8,
                  min_epochs: int = 10, max_epochs: int = 160, steps: int = 120, warmup: int = 30,
                  timeout: float = 180, fallback_epochs: int = 30) -> dict:
    """Fit the epochs of every run to ``seconds`` of training on this device, measured, not guessed.

    Times the runner's training step with as many concurrent processes as the campaign runs at
    once (eager, the first run's model and batch size), then picks the most epochs whose steps
    fit ``safety * seconds``, and the pruning interval that gives ``pruning_steps`` pruning steps
    before t_fin = end_fraction * T (the paper's dt = 2000 gives 50 steps over T = 125,120). A
    lease of 15 device-minutes cannot hold the paper's 160 epochs; this is how the reduced
    protocol is sized, and the sizing report is packed with the results (``collect``).
    """
    cfg = c.runs[0].cfg
    batch = cfg.train.batch_size
    images = cfg.data.train_subset or 50_000
    steps_per_epoch = -(-images // batch)
    concurrent = min(c.workers, len(c.runs))
    row = _probe_processes(dict(model=cfg.model, device="auto", batch_size=batch, steps=steps, warmup=warmup,
                                precision="auto", method="fggp", compile_mode="eager", channels_last=True),
                           concurrent, timeout)
    if "error" in row:
        epochs, why = fallback_epochs, f"probe failed ({row['error']}): fallback"
    else:
        fit = int(safety * seconds * row["steps_per_s"] // steps_per_epoch)
        epochs, why = max(min_epochs, min(max_epochs, fit)), f"{fit} epochs fit, clamped to [{min_epochs}, {max_epochs}]"
    total = steps_per_epoch * epochs
    interval = max(1, int(cfg.pruning.end_fraction * total) // pruning_steps)
    return {"probed": _now(), "device": _device_info(), "probe": row, "seconds": seconds, "safety": safety,
            "concurrent_runs": concurrent, "steps_per_epoch": steps_per_epoch, "epochs": epochs, "why": why,
            "total_steps": total, "pruning_interval": interval, "pruning_steps": pruning_steps,
            "set": {"train.epochs": epochs, "pruning.interval": interval}}


def _cmd_size(args: argparse.Namespace) -> int:
    c = _campaign_from(args)
    report = size_campaign(c, seconds=args.seconds, pruning_steps=args.pruning_steps, safety=args.safety,
                           min_epochs=args.min_epochs, max_epochs=args.max_epochs, steps=args.steps,
                           warmup=args.warmup, timeout=args.timeout)
    c.output_root.mkdir(parents=True, exist_ok=True)
    _write_json_atomic(c.output_root / "sizing.json", report)
    print(json.dumps(report, indent=2), file=sys.stderr)
    print(" ".join(f"--set {k}={v}" for k, v in report["set"].items()))  # the last line: for `start`
    return 0


# ----------------------------------------------------------------------------------------------- CLI
def _parse_set(items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items or []:
        key, eq, raw = item.partition("=")
        if not eq or not key:
            raise CampaignError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.compile=true")
        out[key.lstrip("-")] = yaml.safe_load(raw) if raw != "" else None
    return out


def _campaign_from(args: argparse.Namespace) -> Campaign:
    sets: dict[str, Any] = {}
    use_probe = getattr(args, "use_probe", None)
    if use_probe:  # first find the output root, then read the probe's recommendation there
        plain = load_campaign(args.campaign, output_root=args.output_root)
        path = plain.output_root / "probe.json" if use_probe == "auto" else Path(use_probe)
        report = _read_json(path)
        if report is None:
            print(f"warning: --use-probe: {path} is missing or unreadable: nothing applied", file=sys.stderr)
        else:
            sets.update(report.get("recommended_set") or {})
            print(f"applying the probe's recommendation {sets} ({path})", file=sys.stderr)
    sets.update(_parse_set(getattr(args, "set", None) or []))
    return load_campaign(args.campaign, output_root=args.output_root, workers=getattr(args, "workers", None),
                         budget_s=getattr(args, "budget_s", None), sets=sets)


def _cmd_run(args: argparse.Namespace) -> int:
    return Orchestrator(_campaign_from(args)).run()


def _cmd_start(args: argparse.Namespace) -> int:
    """``setsid nohup campaign.py run ... >> ROOT/campaign.log 2>&1 &``, then wait until it holds its lock."""
    c = _campaign_from(args)
    if _lock_held(c.output_root):
        print(f"campaign {c.name} is already running in {c.output_root}")
        return 0
    c.output_root.mkdir(parents=True, exist_ok=True)
    log = c.output_root / "campaign.log"
    argv = [sys.executable, str(Path(__file__).resolve()), "run", str(c.path), "--output-root", str(c.output_root),
            "--workers", str(c.workers), "--budget-s", str(c.budget_s)]
    for item in args.set or []:
        argv += ["--set", item]
    if args.use_probe:
        argv += ["--use-probe", args.use_probe]
    with open(log, "ab") as f:
        proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    give_up = time.time() + 600  # its imports can take long on a busy machine; `status --wait` relies on the lock
    while time.time() < give_up and not _lock_held(c.output_root) and proc.poll() is None:
        time.sleep(0.1)
    if proc.poll() is not None and proc.returncode not in (0, EXIT_UNFINISHED):
        print(log.read_text()[-3000:])
        print(f"error: the campaign process exited at once ({proc.returncode})", file=sys.stderr)
        return proc.returncode or 1
    print(f"campaign {c.name} running detached as pid {proc.pid}; log {log}\n"
          f"poll:  python recipes/campaign.py status {c.path} --wait 540\n"
          f"pack:  python recipes/campaign.py collect {c.path} --out DIR")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    c = _campaign_from(args)
    end = time.time() + (args.wait or 0)
    while args.wait and time.time() < end and _lock_held(c.output_root):
        time.sleep(min(1.0, max(0.1, end - time.time())))
    report = campaign_status(c)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        _print_status(report)
    return 0


def _cmd_stop(args: argparse.Namespace) -> int:
    return stop_campaign(_campaign_from(args))


def _cmd_collect(args: argparse.Namespace) -> int:
    c = _campaign_from(args)
    summary = collect(c, Path(args.out), max_files=args.max_files, max_bytes=int(args.max_mib * MiB),
                      max_total=int(args.max_total_mib * MiB), checkpoints=args.checkpoints)
    print(summary_markdown(summary))
    for f in summary["files"]:
        print(f"wrote {f['path']} ({f['bytes'] / MiB:.2f} MiB)")
    if summary["left_out"]:
        print(f"left out (size limits): {', '.join(summary['left_out'])}")
    return 0


def _cmd_unpack(args: argparse.Namespace) -> int:
    folders = unpack([Path(s) for s in args.shards], Path(args.dest), verify=not args.no_verify)
    print(f"{len(folders)} export folder(s) under {args.dest}")
    return 0


def _steps_of(cfg: Any) -> int | None:
    """T of a CIFAR-size run (the runner keeps each epoch's last short batch)."""
    images = cfg.data.train_subset or (50_000 if cfg.data.dataset in ("cifar10", "uoft-cs/cifar10") else None)
    if images is None:
        return None
    return -(-images // cfg.train.batch_size) * cfg.train.epochs


def _cmd_probe(args: argparse.Namespace) -> int:
    c = None
    if args.campaign:
        c = load_campaign(args.campaign, output_root=args.output_root)
        args.model = args.model or c.runs[0].cfg.model
        args.json = args.json or str(c.output_root / "probe.json")
        args.concurrency = args.concurrency or str(c.workers)
    args.model = args.model or "fggp_vgg19_bn_cifar"
    args.concurrency = args.concurrency or "3"
    report = probe(args)
    if c is not None:  # training-step time alone: evaluation, checkpoints and start-up come on top
        steps = [_steps_of(run.cfg) for run in c.runs]
        if all(steps):
            total = sum(steps)
            report["campaign_estimate"] = {
                "runs": len(steps), "optimizer_steps": total,
                "minutes_by_processes": {str(r["processes"]): round(total / r["steps_per_s_total"] / 60, 1)
                                         for r in report["rows"] if "error" not in r
                                         and (r["processes"] > 1 or r is report["best_single"])},
            }
    text = json.dumps(report, indent=2)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")
    print(text)
    return 0 if report["best_single"] else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="see the module docstring (python -m pydoc recipes/campaign.py) for the file format")
    sub = parser.add_subparsers(dest="command", required=True)

    def campaign_parser(name: str, help: str, runtime: bool = False) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        p.add_argument("campaign", help="campaign YAML file")
        p.add_argument("--output-root", help="override the file's output_root")
        p.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override a recipe key in every run (wins over the file), e.g. train.compile=true")
        if runtime:
            p.add_argument("--use-probe", nargs="?", const="auto", metavar="PROBE_JSON",
                           help="apply the recommended_set of a probe report (default: OUTPUT_ROOT/probe.json)")
            p.add_argument("--workers", type=int, help="override the file's workers")
            p.add_argument("--budget-s", type=float, help="override the file's budget_s (0: none)")
        return p

    campaign_parser("run", "run the campaign in the foreground until done or the budget", True).set_defaults(fn=_cmd_run)
    campaign_parser("start", "run it detached (setsid), return at once", True).set_defaults(fn=_cmd_start)
    p = campaign_parser("status", "state, step, top-1 of every run")
    p.add_argument("--wait", type=float, default=0, help="first wait up to this many seconds for the campaign to end")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=_cmd_status)
    campaign_parser("stop", "stop a running campaign (every run checkpoints)").set_defaults(fn=_cmd_stop)
    p = campaign_parser("collect", "pack results into <= 8 tar.gz files of <= 16 MiB, with a summary")
    p.add_argument("--out", required=True, help="folder for the shards (e.g. $OUT)")
    p.add_argument("--max-files", type=int, default=8)
    p.add_argument("--max-mib", type=float, default=16.0, help="largest shard, MiB")
    p.add_argument("--max-total-mib", type=float, default=64.0, help="all shards together, MiB")
    p.add_argument("--checkpoints", action="store_true",
                   help="also pack the newest checkpoint of each unfinished run (to resume it elsewhere), where it fits")
    p.set_defaults(fn=_cmd_collect)
    p = sub.add_parser("unpack", help="extract shards; check every export folder with fggp_hub.load")
    p.add_argument("shards", nargs="+")
    p.add_argument("--dest", required=True)
    p.add_argument("--no-verify", action="store_true")
    p.set_defaults(fn=_cmd_unpack)
    p = campaign_parser("size", "fit epochs and pruning interval to SECONDS of training here (probe); print --set args")
    p.add_argument("--seconds", type=float, required=True, help="wall seconds the runs' training steps may take")
    p.add_argument("--safety", type=float, default=0.8, help="fraction of SECONDS planned (evaluation, start-up)")
    p.add_argument("--pruning-steps", type=int, default=50)
    p.add_argument("--min-epochs", type=int, default=10)
    p.add_argument("--max-epochs", type=int, default=160)
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--timeout", type=float, default=180)
    p.set_defaults(fn=_cmd_size)
    p = sub.add_parser("probe", help="time training steps: compile modes, channels_last, N concurrent processes")
    p.add_argument("--campaign", help="probe this campaign's model; write OUTPUT_ROOT/probe.json (packed by collect)")
    p.add_argument("--output-root", help="with --campaign: override its output_root")
    p.add_argument("--model", help="timm model (default: the campaign's, else fggp_vgg19_bn_cifar)")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--precision", default="auto", help="auto: bf16 on a GPU, no on CPU")
    p.add_argument("--method", default="fggp")
    p.add_argument("--modes", default="eager,default", help="comma list of eager, default, reduce-overhead, max-autotune")
    p.add_argument("--channels-last", default="true", choices=["true", "false", "both"])
    p.add_argument("--concurrency", help="comma list of process counts to run the fastest mode with "
                                          "(default: the campaign's workers, else 3)")
    p.add_argument("--timeout", type=float, default=300, help="seconds per configuration")
    p.add_argument("--json", help="write the report here")
    p.set_defaults(fn=_cmd_probe)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_probe_worker"]:  # one probe process (internal)
        config = json.loads(argv[1])
        barrier = config.pop("barrier", None)
        print(json.dumps(probe_step_time(**config, barrier=tuple(barrier) if barrier else None)), flush=True)
        return 0
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except CampaignError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
