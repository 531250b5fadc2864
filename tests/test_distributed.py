"""Data-parallel training: torchrun with two gloo processes on loopback against one process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.distributed as dist

import densitylab as dl
from densitylab import distributed

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
LAUNCH_TIMEOUT_S = 240

# Trains the same flows as `single_process_fit` below; run once alone and once under torchrun.
WORKER = textwrap.dedent(
    """
    import sys
    import torch
    import densitylab as dl
    from densitylab import distributed

    def fit(model, use_ddp):
        x = dl.datasets.get("moons").sample(301, seed=0)
        flow = dl.flows.build(model, dim=2, n_layers=4, hidden=(16,), seed=3).double()
        return dl.fit(flow, x, epochs=4, batch_size=32, seed=1, engine="torch",
                      distributed=use_ddp, verbose=False)

    with distributed.process_group():
        results = {model: fit(model, True) for model in ("realnvp", "glow")}
        if distributed.rank() == 0:
            torch.save({m: r.flow.state_dict() for m, r in results.items()}, sys.argv[1])
    """
)


def launch(script: str, *args: str, tmp_path) -> subprocess.CompletedProcess:
    path = tmp_path / "worker.py"
    path.write_text(script)
    return subprocess.run(
        [*TORCHRUN, str(path), *args], capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S,
        cwd=tmp_path,
    )


def single_process_fit(model: str):
    x = dl.datasets.get("moons").sample(301, seed=0)
    flow = dl.flows.build(model, dim=2, n_layers=4, hidden=(16,), seed=3).double()
    return dl.fit(flow, x, epochs=4, batch_size=32, seed=1, engine="torch", verbose=False)


@pytest.mark.slow
def test_two_processes_train_the_parameters_one_process_trains(tmp_path):
    done = launch(WORKER, str(tmp_path / "parallel.pt"), tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    parallel = torch.load(tmp_path / "parallel.pt")
    for model in ("realnvp", "glow"):  # glow: ActNorm's data-dependent init must be shared
        alone = single_process_fit(model).flow.state_dict()
        for name, value in alone.items():
            torch.testing.assert_close(parallel[model][name], value, rtol=0, atol=1e-12,
                                       msg=f"{model}.{name}")


@pytest.mark.slow
def test_a_failing_rank_stops_the_job_with_its_error(tmp_path):
    script = textwrap.dedent(
        """
        import densitylab as dl
        from densitylab import distributed

        with distributed.process_group(timeout_s=60):
            if distributed.rank() == 1:
                raise RuntimeError("rank 1 lost its data")
            x = dl.datasets.get("moons").sample(500, seed=0)
            dl.fit(dl.flows.realnvp(dim=2), x, epochs=10_000, distributed=True, verbose=False)
        """
    )
    done = launch(script, tmp_path=tmp_path)  # bounded by the subprocess timeout
    assert done.returncode != 0
    assert "rank 1 lost its data" in done.stderr


@pytest.mark.slow
def test_cli_trains_data_parallel_and_only_rank_zero_writes(tmp_path):
    out = tmp_path / "run"
    command = [*TORCHRUN, "-m", "densitylab", "train", "moons", "--distributed", "--model", "glow",
               "--epochs", "3", "-n", "300", "--n-test", "500", "--quiet", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("wrote") == 1
    config = json.loads((out / "config.json").read_text())
    assert config["processes"] == 2
    flow = dl.load(out / "model")
    assert np.isfinite(flow.log_prob(np.zeros((3, 2))).detach().numpy()).all()


@pytest.mark.slow
def test_cli_distributed_without_torchrun_is_one_clear_line(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "densitylab", "train", "moons", "--distributed", "--out",
         str(tmp_path / "run")], capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert "torchrun" in done.stderr
    assert not (tmp_path / "run").exists()


@pytest.fixture
def one_process_group(tmp_path):
    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1),
                            rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_distributed_fit_of_one_process_equals_plain_fit(one_process_group):
    x = dl.datasets.get("moons").sample(200, seed=0)
    flows = [dl.flows.glow(dim=2, n_layers=2, hidden=(8,), seed=0).double() for _ in range(2)]
    plain = dl.fit(flows[0], x, epochs=3, engine="torch", verbose=False)
    ddp = dl.fit(flows[1], x, epochs=3, distributed=True, verbose=False)
    for name, value in plain.flow.state_dict().items():
        torch.testing.assert_close(ddp.flow.state_dict()[name], value, rtol=0, atol=1e-12)


def test_distributed_fit_rejects_the_compiled_engine(one_process_group):
    x = dl.datasets.get("moons").sample(100, seed=0)
    with pytest.raises(ValueError, match="torch engine"):
        dl.fit(dl.flows.realnvp(dim=2), x, epochs=1, engine="compiled", distributed=True)


def test_distributed_fit_needs_a_process_group():
    x = dl.datasets.get("moons").sample(100, seed=0)
    with pytest.raises(ValueError, match="process group"):
        dl.fit(dl.flows.realnvp(dim=2), x, epochs=1, distributed=True)


def test_helpers_without_a_process_group_are_single_process_identities():
    t = torch.arange(6.0).reshape(2, 3)
    assert distributed.rank() == 0 and distributed.world_size() == 1
    assert distributed.is_main_process() and not distributed.is_active()
    assert distributed.shard(t, dim=1) is t
    assert distributed.all_reduce_sum(t) is t
