"""Several processes: what `accelerate launch`, torchrun or mpirun started, and the one launch that silently
starts fewer processes than asked."""

from __future__ import annotations

import os

from ..errors import InputError

_LAUNCHER_VARIABLES = ("LOCAL_RANK", "WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def launch_state(cpu: bool = False):
    """accelerate's `PartialState` when this process was started by `accelerate launch`, torchrun or mpirun with
    several processes (gloo on CPUs when `cpu`), else None. Call it before moving a model to "cuda": it selects
    this process's GPU. A launch that asked for several processes but started one is an `InputError`."""
    if not any(v in os.environ for v in _LAUNCHER_VARIABLES):
        check_launch()
        return None
    from accelerate import PartialState

    state = PartialState(cpu=cpu)
    asked = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if asked > 1 and state.num_processes != asked:
        raise InputError(f"launched as {asked} processes but accelerate sees {state.num_processes} "
                         f"({state.distributed_type}); on a machine without GPUs run with --device cpu")
    return state if state.num_processes > 1 else None


def check_launch() -> None:
    """Refuse `accelerate launch --cpu --num_processes N` (N > 1): accelerate then starts one process, not N (it
    runs several CPU processes only through mpirun), and the work of N would silently run as one."""
    env = os.environ
    if env.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes") and "MASTER_ADDR" in env \
            and not any(v in env for v in _LAUNCHER_VARIABLES):
        raise InputError("`accelerate launch --cpu --num_processes N` starts a single process (several CPU processes "
                         "need mpirun); use `accelerate launch --multi_gpu --num_processes N` (on a machine without "
                         "GPUs it runs N CPU processes over gloo) or torchrun")


def is_main_process() -> bool:
    """Rank 0 of a launched group (or the only process)."""
    return int(os.environ.get("RANK", "0")) == 0
