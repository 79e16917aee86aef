"""Under `strategy: ddp` every rank runs the whole command: only global rank 0 may write, and tuning, whose
ranks would each ask Optuna for trials of their own, is refused outside a spawning strategy."""

import pytest

from techbench.errors import ConfigError
from techbench.liveness import global_rank, primary_only
from techbench.workers import SPAWNING, check_tune_hardware, check_workers

RANK_ENV = ("RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK", "NODE_RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


@pytest.mark.parametrize(
    "env, rank",
    [
        ({}, 0),
        ({"NODE_RANK": "0", "LOCAL_RANK": "0"}, 0),  # the process Lightning's launcher started from
        ({"NODE_RANK": "0", "LOCAL_RANK": "1"}, 1),  # its child
        ({"NODE_RANK": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2"}, 2),
        ({"RANK": "3", "LOCAL_RANK": "1"}, 3),  # torchrun
        ({"SLURM_PROCID": "0"}, 0),
    ],
)
def test_global_rank_and_rank_zero_writes(monkeypatch, env, rank):
    for name in RANK_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    writes = []

    @primary_only("skipped")
    def write(x):
        writes.append(x)
        return "written"

    assert global_rank() == rank
    assert write(1) == ("written" if rank == 0 else "skipped") and len(writes) == (rank == 0)


def _hardware(**kw):
    return {"accelerator": "cpu", "devices": 1, "num_nodes": 1, "strategy": "auto", **kw}


def test_tuning_over_several_devices_needs_a_spawning_strategy():
    check_tune_hardware(_hardware())
    for strategy in SPAWNING:
        check_tune_hardware(_hardware(devices=2, strategy=strategy))
    for devices, strategy in ((2, "ddp"), (-1, "auto"), (-1, "ddp")):  # -1 (all devices) may be several
        with pytest.raises(ConfigError) as e:
            check_tune_hardware(_hardware(devices=devices, strategy=strategy))
        assert e.value.key == "hardware.strategy" and "ddp_spawn" in str(e.value)
    with pytest.raises(ConfigError) as e:
        check_tune_hardware(_hardware(num_nodes=2, strategy="ddp_spawn"))
    assert e.value.key == "hardware.num_nodes"


@pytest.mark.parametrize(
    "workers, devices, key", [(0, 1, "--workers"), (2, 2, "hardware.devices"), (2, -1, "hardware.devices")]
)
def test_several_workers_each_train_on_one_device(workers, devices, key):
    check_workers(1, _hardware(devices=-1))  # one worker may use every device (under a spawning strategy)
    check_workers(3, _hardware())
    with pytest.raises(ConfigError) as e:
        check_workers(workers, _hardware(devices=devices))
    assert e.value.key == key
