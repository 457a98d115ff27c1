"""A real single-node Slurm cluster on this machine, for the tests marked ``slurm``.

It starts ``munged``, ``slurmctld`` and ``slurmd`` (Debian: ``apt-get install slurm-wlm
munge``) in the foreground, as children of the test process, with their key, sockets, state,
logs and a minimal ``slurm.conf`` in a fresh folder under /tmp (unix socket paths must be short),
on free ports, so nothing of the machine's own Slurm or munge set-up is used or touched. Client
commands find the cluster through ``SLURM_CONF`` (:attr:`SlurmCluster.env`). Where it cannot
start (not installed, not Linux, a daemon that refuses to run), :func:`start_cluster` raises
:class:`ClusterUnavailable` with the reason, and the tests are skipped with it.

Run by hand: ``python tests/slurm_cluster.py`` starts one, prints ``export SLURM_CONF=...`` and
waits for Ctrl-C.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "srun", "squeue", "scontrol", "scancel", "sinfo")

SLURM_CONF = """\
ClusterName=genzootest
SlurmctldHost={host}(127.0.0.1)
SlurmUser={user}
SlurmdUser={user}
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={dir}/munge.socket
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.pid
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
MinJobAge=600
KillWait=30
JobRequeue=1
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=2000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


class ClusterUnavailable(Exception):
    """Why no cluster could be started here (the tests are skipped with this reason)."""


class SlurmCluster:
    def __init__(self, folder: Path, procs: list[subprocess.Popen]) -> None:
        self.folder = folder
        self.procs = procs
        self.env = {**os.environ, "SLURM_CONF": str(folder / "slurm.conf")}

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=60, check=check)

    def job_state(self, job_id: str) -> tuple[str, str]:
        """(state, reason) of a job still known to slurmctld, e.g. ``("PENDING", "BeginTime")``."""
        out = self.run("squeue", "--noheader", "--array", "--format=%T|%r", f"--jobs={job_id}", check=False)
        state, _, reason = out.stdout.strip().partition("|")
        return state, reason

    def release_requeued(self, job_id: str) -> bool:
        """A requeued job waits about two minutes before it may start again (Slurm holds it with
        reason BeginTime); start it now. Returns whether it was held."""
        if self.job_state(job_id) == ("PENDING", "BeginTime"):
            self.run("scontrol", "update", f"JobId={job_id}", "StartTime=now", check=False)
            return True
        return False

    def logs(self) -> str:
        parts = []
        for name in ("munged.log", "slurmctld.log", "slurmd.log"):
            path = self.folder / name
            if path.exists():
                parts.append(f"--- {name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-15:]))
        return "\n".join(parts)

    def stop(self) -> None:
        subprocess.run(
            ["scancel", "--user", getpass.getuser()], env=self.env, capture_output=True, timeout=60
        )
        for proc in reversed(self.procs):  # slurmd, slurmctld, then munged: the processes started here
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=20)
        shutil.rmtree(self.folder, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_cluster(timeout: float = 60.0) -> SlurmCluster:
    """Start munged, slurmctld and slurmd and wait until the node is idle; see the module doc."""
    if not sys.platform.startswith("linux"):
        raise ClusterUnavailable("a local Slurm cluster needs Linux")
    missing = [p for p in (*DAEMONS, *CLIENTS) if shutil.which(p) is None]
    if missing:
        raise ClusterUnavailable(
            f"Slurm is not installed here ({', '.join(missing)} not found; Debian: apt-get install slurm-wlm munge)"
        )
    folder = Path(tempfile.mkdtemp(prefix="gzslurm-", dir="/tmp"))
    for sub in ("state", "spool"):
        (folder / sub).mkdir()
    key = folder / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    host = socket.gethostname().split(".")[0]
    conf = SLURM_CONF.format(
        host=host,
        user=getpass.getuser(),
        ctld_port=_free_port(),
        slurmd_port=_free_port(),
        dir=folder,
        cpus=os.cpu_count() or 1,
    )
    (folder / "slurm.conf").write_text(conf)
    env = {**os.environ, "SLURM_CONF": str(folder / "slurm.conf")}
    commands = {
        "munged": ["munged", "--foreground", "--force", f"--socket={folder}/munge.socket",
                   f"--key-file={key}", f"--log-file={folder}/munged.log", f"--pid-file={folder}/munged.pid",
                   f"--seed-file={folder}/munged.seed"],
        "slurmctld": ["slurmctld", "-D", "-i"],
        "slurmd": ["slurmd", "-D", "-N", host],
    }  # fmt: skip
    procs: list[subprocess.Popen] = []
    cluster = SlurmCluster(folder, procs)
    try:
        for name in DAEMONS:
            log = open(folder / f"{name}.out", "w")  # noqa: SIM115 - the daemon keeps it
            procs.append(subprocess.Popen(commands[name], env=env, stdout=log, stderr=subprocess.STDOUT))
            if name == "munged":
                _wait(lambda: (folder / "munge.socket").exists(), 10, "munged's socket", cluster, procs)
        _wait(lambda: cluster.run("sinfo", "--noheader", "--format=%T", check=False).stdout.strip() == "idle",
              timeout, "an idle node", cluster, procs)  # fmt: skip
    except ClusterUnavailable:
        cluster.stop()
        raise
    return cluster


def _wait(predicate, timeout: float, what: str, cluster: SlurmCluster, procs: list[subprocess.Popen]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        dead = [p.args[0] for p in procs if p.poll() is not None]
        if dead:
            out = "".join((cluster.folder / f"{d}.out").read_text(errors="replace")[-500:] for d in dead)
            raise ClusterUnavailable(
                f"{', '.join(dead)} stopped while waiting for {what}: {out}\n{cluster.logs()}"
            )
        time.sleep(0.2)
    raise ClusterUnavailable(f"no {what} after {timeout:.0f} s\n{cluster.logs()}")


if __name__ == "__main__":
    try:
        started = start_cluster()
    except ClusterUnavailable as exc:
        sys.exit(f"no cluster: {exc}")
    print(f"export SLURM_CONF={started.env['SLURM_CONF']}  # Ctrl-C stops the cluster")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        started.stop()
