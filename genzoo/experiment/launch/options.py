"""The ``launcher:`` section of an experiment file: what each run's job asks the scheduler for.

Read like ``training:`` and ``evaluation:`` (from the file, a ``--profile`` and ``--set
launcher.x=y``) and checked when the file is loaded, so ``genzoo validate`` reports a bad
option with its file, line and key. The section never enters a run's fingerprint: resources
decide where and how fast a run trains, not what it computes (with one caveat: several
processes per run mean a larger global batch, as ``training.batch_size`` is per process; the
results row records ``world_size``). The names follow submitit's and hydra-submitit-launcher's
(``timeout_min``, ``mem_gb``, ``gpus_per_node`` ...); ``docs/cluster.md`` shows them in use.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from genzoo.errors import ConfigError
from genzoo.io.validation import check_float, check_int, invalid

LAUNCHERS = ("local", "slurm")

# The long options of sbatch (Slurm 22.05 to 24.05), for ``sbatch_options``.
SBATCH_OPTIONS = frozenset(
    """account acctg-freq array batch bb bbf begin chdir cluster-constraint clusters comment
    constraint container container-id contiguous core-spec cores-per-socket cpu-freq cpus-per-gpu
    cpus-per-task deadline delay-boot dependency distribution error exclude exclusive export
    export-file extra extra-node-info get-user-env gid gpu-bind gpu-freq gpus gpus-per-node
    gpus-per-socket gpus-per-task gres gres-flags help hint hold ignore-pbs input job-name
    kill-on-invalid-dep licenses mail-type mail-user mcs-label mem mem-bind mem-per-cpu
    mem-per-gpu mincpus network nice no-kill no-requeue nodefile nodelist nodes ntasks
    ntasks-per-core ntasks-per-gpu ntasks-per-node ntasks-per-socket oom-kill-step open-mode output
    overcommit oversubscribe parsable partition power prefer priority profile propagate qos quiet
    reboot requeue reservation segment signal sockets-per-node spread-job switches test-only
    thread-spec threads-per-core time time-min tmp tres-bind tres-per-task uid usage
    use-min-nodes verbose version wait wait-all-nodes wckey wrap""".split()
)
# sbatch options that a field of this section sets, and those genzoo itself sets or needs left
# alone (the job's log files, its array, the signal that asks it to checkpoint).
SBATCH_FIELDS = {
    "partition": "partition",
    "account": "account",
    "nodes": "nodes",
    "time": "timeout_min",
    "mem": "mem_gb",
    "cpus-per-task": "cpus_per_task",
    "gpus-per-node": "gpus_per_node",
    "ntasks-per-node": "tasks_per_node",
    "ntasks": "tasks_per_node",
}
SBATCH_RESERVED = frozenset(
    "array error output open-mode signal job-name wrap parsable wait test-only help usage version".split()
)
DEFAULT_SLURM_TIMEOUT_MIN = 60


@dataclass(frozen=True)
class LauncherConfig:
    """Resources of one run's job (``genzoo run FILE --launcher local|slurm``).

    - ``partition``, ``account``: Slurm's partition and account (default: the cluster's).
    - ``nodes``: nodes per run (Slurm; the local launcher runs on this machine only).
    - ``gpus_per_node``: GPUs per node for each run (0: CPU). With more than one GPU in a
      run, it trains with DistributedDataParallel, one process per GPU.
    - ``tasks_per_node``: processes per node; defaults to ``gpus_per_node`` (one per GPU), or
      1 on CPU. Set it on CPU for DDP over CPU processes (gloo).
    - ``cpus_per_task``: CPU cores per process; also the process's thread count (default:
      torch's, or 1 when ``runs_per_gpu`` > 1).
    - ``mem_gb``: memory per node, in GB.
    - ``timeout_min``: the job's time limit in minutes (Slurm default
      ``DEFAULT_SLURM_TIMEOUT_MIN``; local: none). A run that reaches it checkpoints, its job is
      requeued and it resumes where it stopped.
    - ``signal_delay_s``: how long before the time limit the job is told to checkpoint
      (submitit's USR2 signal); the current step and the checkpoint must fit in it.
    - ``max_num_timeout``: how many times a run's job may be requeued after reaching its time
      limit (preemptions are not counted).
    - ``max_parallel``: at most this many runs at once (Slurm: the job array's throttle; local:
      default ``runs_per_gpu`` per ``gpus_per_node`` GPUs of the machine, or 1 on CPU).
    - ``runs_per_gpu``: how many runs share each group of ``gpus_per_node`` GPUs (local
      launcher only; needs ``gpus_per_node`` >= 1). A small model leaves a GPU idle between its
      kernel launches, so several runs at once can train more images/s in total; each of
      their processes gets one CPU thread unless ``cpus_per_task`` says otherwise.
    - ``setup``: shell lines run at the start of each job (``module load cuda``,
      ``source .venv/bin/activate``).
    - ``sbatch_options``: further sbatch options, ``{qos: high, constraint: a100}``.
    """

    partition: str | None = None
    account: str | None = None
    nodes: int = 1
    gpus_per_node: int = 0
    tasks_per_node: int | None = None
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    timeout_min: int | None = None
    signal_delay_s: int = 120
    max_num_timeout: int = 10
    max_parallel: int | None = None
    runs_per_gpu: int = 1
    setup: list[str] = field(default_factory=list)
    sbatch_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        own = "LauncherConfig"
        for name in ("partition", "account"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, str) and value.strip()):
                raise invalid(name, value, "a non-empty name", owner=own)
        check_int("nodes", self.nodes, 1, owner=own)
        check_int("gpus_per_node", self.gpus_per_node, 0, owner=own)
        if self.tasks_per_node is not None:
            check_int("tasks_per_node", self.tasks_per_node, 1, owner=own)
            if self.gpus_per_node and self.tasks_per_node != self.gpus_per_node:
                raise invalid(
                    "tasks_per_node",
                    self.tasks_per_node,
                    f"to equal gpus_per_node={self.gpus_per_node} (one process per GPU), or to be left out",
                    owner=own,
                )
        if self.cpus_per_task is not None:
            check_int("cpus_per_task", self.cpus_per_task, 1, owner=own)
        if self.mem_gb is not None:
            check_float("mem_gb", self.mem_gb, 0.0, open_low=True, owner=own)
        if self.timeout_min is not None:
            check_int("timeout_min", self.timeout_min, 1, owner=own)
        check_int("signal_delay_s", self.signal_delay_s, 1, owner=own)
        limit_s = 60 * (self.timeout_min or DEFAULT_SLURM_TIMEOUT_MIN)
        if self.timeout_min is not None and self.signal_delay_s >= limit_s:
            raise invalid(
                "signal_delay_s",
                self.signal_delay_s,
                f"less than timeout_min in seconds ({limit_s})",
                owner=own,
            )
        check_int("max_num_timeout", self.max_num_timeout, 0, owner=own)
        if self.max_parallel is not None:
            check_int("max_parallel", self.max_parallel, 1, owner=own)
        check_int("runs_per_gpu", self.runs_per_gpu, 1, owner=own)
        if self.runs_per_gpu > 1 and not self.gpus_per_node:
            raise invalid(
                "runs_per_gpu",
                self.runs_per_gpu,
                "1 when gpus_per_node=0 (more needs gpus_per_node >= 1; on CPU, use max_parallel)",
                owner=own,
            )
        if not (isinstance(self.setup, list) and all(isinstance(line, str) for line in self.setup)):
            raise invalid("setup", self.setup, "a list of shell lines", owner=own)
        object.__setattr__(self, "sbatch_options", sbatch_options(self.sbatch_options))

    @property
    def processes_per_node(self) -> int:
        """Processes (DDP ranks) per node: one per GPU, or ``tasks_per_node`` on CPU."""
        return self.tasks_per_node or self.gpus_per_node or 1

    @property
    def world_size(self) -> int:
        return self.nodes * self.processes_per_node

    @property
    def threads_per_process(self) -> int | None:
        """Each process's CPU threads: ``cpus_per_task``, else 1 for runs that share a GPU (their
        threads would otherwise contend for the same cores), else None (torch's default)."""
        if self.cpus_per_task is not None:
            return self.cpus_per_task
        return 1 if self.runs_per_gpu > 1 else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """The options that differ from the defaults, ``partition=gpu, gpus_per_node=8``."""
        defaults = LauncherConfig()
        changed = [f"{k}={v}" for k, v in asdict(self).items() if v != getattr(defaults, k)]
        return ", ".join(changed) or "defaults"


def sbatch_options(options: Any) -> dict[str, Any]:
    """``options`` with names as sbatch spells them (``gpu_bind`` -> ``gpu-bind``), each checked
    to be an sbatch option that this section does not set under a name of its own."""
    own = "LauncherConfig"
    if not isinstance(options, Mapping):
        raise invalid("sbatch_options", options, "a mapping of sbatch option -> value", owner=own)
    out: dict[str, Any] = {}
    for raw, value in options.items():
        name = str(raw).strip().lstrip("-").replace("_", "-")
        if name in SBATCH_FIELDS:
            raise ConfigError(
                f"{own}.sbatch_options={{{raw}: {value!r}}}: --{name} is set by "
                f"launcher.{SBATCH_FIELDS[name]}; use that key instead"
            )
        if name in SBATCH_RESERVED:
            raise ConfigError(
                f"{own}.sbatch_options={{{raw}: {value!r}}}: genzoo sets --{name} itself (job logs, "
                "arrays, the checkpoint signal); remove it"
            )
        if name not in SBATCH_OPTIONS:
            close = difflib.get_close_matches(name, sorted(SBATCH_OPTIONS), n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join('--' + c for c in close)}?" if close else ""
            raise ConfigError(
                f"{own}.sbatch_options={{{raw}: {value!r}}}: sbatch has no option --{name}{hint} "
                "(see `man sbatch`)"
            )
        if value is False or value is None or isinstance(value, (list, dict)):
            raise ConfigError(
                f"{own}.sbatch_options={{{raw}: {value!r}}}: expected a string, a number, or true for a "
                "flag without a value (leave a flag out to turn it off)"
            )
        out[name] = value
    return out


def check_launcher_name(name: str) -> str:
    """``name`` if genzoo has such a launcher, else an error listing the launchers."""
    if name not in LAUNCHERS:
        close = difflib.get_close_matches(name, LAUNCHERS, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"--launcher {name}: unknown launcher {name!r}{hint} Expected one of: {', '.join(LAUNCHERS)}"
        )
    return name
