import math

import pytest

from fggp_hub.pruning import CubicSchedule, annealed_rate


def test_paper_schedule_values():
    # 160 epochs of 50k/64 -> 782 steps/epoch: T = 125120, t_fin = round(0.8 T) = 100096
    s = CubicSchedule(total_steps=125_120, final_density=0.05, interval=2000)
    assert s.t_fin == 100_096
    assert s.density(0) == 1.0
    assert s.density(s.t_fin) == 0.05
    assert s.density(s.total_steps) == 0.05
    # halfway: d = 0.05 + 0.95 * 0.5**3
    assert s.density(50_048) == pytest.approx(0.05 + 0.95 * 0.125)
    t = 2000
    assert s.density(t) == pytest.approx(0.05 + 0.95 * (1 - t / 100_096) ** 3)
    steps = s.pruning_steps()
    # the spec's 50 steps on multiples of dt, plus t_fin itself (deliberate, see CubicSchedule)
    assert steps[0] == 2000 and steps[-2] == 100_000 and steps[-1] == 100_096 and len(steps) == 51
    assert all(s.is_pruning_step(t) for t in steps)
    assert not s.is_pruning_step(0) and not s.is_pruning_step(1999) and not s.is_pruning_step(102_000)
    exact = CubicSchedule(total_steps=125_120, final_density=0.05, interval=2000, prune_at_t_fin=False)
    assert exact.pruning_steps() == list(range(2000, 100_001, 2000))
    assert not exact.is_pruning_step(100_096)
    # the spec's rule ends a hair short of the target; the extra step closes the gap
    assert 0 < exact.density(100_000) - 0.05 < 1e-9


def test_sparse_start_and_clamping():
    s = CubicSchedule(total_steps=100, final_density=0.02, initial_density=0.5, interval=10)
    assert s.t_fin == 80
    assert s.density(-5) == 0.5 and s.density(0) == 0.5
    assert s.density(40) == pytest.approx(0.02 + 0.48 * 0.125)
    assert s.density(95) == 0.02
    assert s.sparsity(80) == pytest.approx(0.98)
    assert s.pruning_steps() == [10, 20, 30, 40, 50, 60, 70, 80]  # t_fin on a multiple: no extra step
    # monotone non-increasing density
    d = [s.density(t) for t in range(0, 101)]
    assert all(a >= b for a, b in zip(d, d[1:]))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(total_steps=0, final_density=0.1), "total_steps"),
        (dict(total_steps=100, final_density=0.0), "final_density"),
        (dict(total_steps=100, final_density=0.5, initial_density=0.4), "initial_density"),
        (dict(total_steps=100, final_density=0.1, interval=0), "interval"),
        (dict(total_steps=10, final_density=0.1, interval=20), "no pruning step"),
    ],
)
def test_bad_schedules_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CubicSchedule(**kwargs)


def test_annealed_rate():
    assert annealed_rate(0, 100) == pytest.approx(0.5)
    assert annealed_rate(100, 100) == pytest.approx(0.005)
    assert annealed_rate(50, 100) == pytest.approx(0.005 + 0.495 * (1 + math.cos(math.pi / 2)) / 2)
