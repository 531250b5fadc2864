"""Timings the report compares: medians with standard errors, the warm-up dropped."""

from __future__ import annotations

import pytest

from densitylab.experiments.timing import median_seconds, per_epoch, timed


def test_a_slow_warm_up_and_one_slowed_run_move_neither_the_median_nor_its_error():
    steady = [1.0, 1.1, 0.9, 1.0, 1.05, 0.95, 1.0]
    median, se = median_seconds([1.0, *steady])
    assert median == pytest.approx(1.0)
    slowed = median_seconds([30.0, *steady[:-1], 9.0])  # warm-up and one run beside a process
    assert slowed[0] == pytest.approx(1.0, abs=0.05) and slowed[1] < 0.05
    assert se == pytest.approx(1.2533 * 1.4826 * 0.05 / 7 ** 0.5)


def test_per_epoch_differences_cumulative_seconds_and_drops_the_first_epoch():
    cumulative = [5.0, 6.0, 7.1, 8.0, 9.0]  # first epoch 5 s: compilation
    median, _ = per_epoch(cumulative)
    assert median == pytest.approx(1.0)


def test_timed_calls_once_more_for_the_warm_up_and_refuses_too_few_timings():
    calls = []
    median, se = timed(lambda: calls.append(1), repeats=3)
    assert len(calls) == 4 and median >= 0 and se >= 0
    with pytest.raises(ValueError, match="at least two timings"):
        median_seconds([1.0, 2.0])


@pytest.mark.slow  # imports torch and matplotlib: about 10 s on a busy machine
def test_every_study_records_the_machine_load_at_its_start_and_end(tmp_path):
    from densitylab import experiments
    from densitylab.experiments.outcome import Outcome

    outcome = experiments.run("datasets", tmp_path / "d", quick=True)
    assert len(outcome.load) == 2 and min(outcome.load) >= 0
    assert Outcome.read(tmp_path / "d").load == outcome.load
