"""The Pruner inside real (tiny) training loops."""
import math

import pytest
import timm
import torch
import torch.nn.functional as F

import fggp_hub  # noqa: F401  (registers the CIFAR models)
from fggp_hub.pruning import CubicSchedule, Pruner, min_feasible_rate

T, INTERVAL, FINAL = 60, 5, 0.9


def _batch(t, seed=0, size=8, res=8):
    g = torch.Generator().manual_seed(seed * 100_003 + t)
    return torch.randn(size, 3, res, res, generator=g), torch.randint(0, 10, (size,), generator=g)


def _setup(seed=0, **pruner_kwargs):
    torch.manual_seed(seed)
    model = timm.create_model("fggp_resnet20_cifar")
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    kwargs = dict(final_sparsity=FINAL, total_steps=T, interval=INTERVAL, seed=seed)
    kwargs.update(pruner_kwargs)
    return model, opt, Pruner(model, opt, **kwargs)


def _train(model, opt, steps, start=0, data_seed=0, on_step=None):
    model.train()
    for t in range(start + 1, start + steps + 1):
        x, y = _batch(t, data_seed)
        loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if on_step:
            on_step(t)


def test_target_sparsity_reached_at_t_fin_and_held():
    model, opt, pruner = _setup()
    schedule = pruner.schedule
    assert schedule.t_fin == 48
    seen = {}

    def check(t):
        assert pruner.step == t
        # exact integer bookkeeping of spec section 3: pruned = floor(N_tot (1 - d(t_last)))
        last = max([s for s in schedule.pruning_steps() if s <= t], default=0)
        expected_pruned = math.floor(pruner.n_total * (1 - schedule.density(last)) + 1e-6) if last else 0
        assert pruner.n_total - sum(int(m.sum()) for m in pruner.masks.values()) == expected_pruned
        for name, p in pruner.params.items():
            mask = pruner.masks[name]
            assert not bool(p.detach()[~mask].any()), f"pruned weight revived in {name} at step {t}"
            buf = opt.state[p].get("momentum_buffer")
            if buf is not None:
                assert not bool(buf[~mask].any()), f"momentum leaks at pruned entries of {name}"
        if t == schedule.t_fin:
            seen["fin"] = pruner.mask_fingerprint()

    _train(model, opt, T, on_step=check)
    assert pruner.sparsity == pytest.approx(FINAL, abs=1.0 / pruner.n_total)
    assert pruner.mask_fingerprint() == seen["fin"]  # frozen after t_fin
    stats = fggp_hub.sparsity_stats(model)
    assert stats["sparsity"] >= pruner.sparsity  # measured zeros include every masked entry
    assert stats["sparsity"] == pytest.approx(FINAL, abs=1e-3)
    # the first conv is kept dense by default
    assert "conv1.weight" not in pruner.params
    assert bool(model.conv1.weight.ne(0).all())
    rep = pruner.report()
    assert set(rep["layers"]) == set(pruner.params) and rep["target_sparsity"] == pytest.approx(FINAL)
    assert 0 < rep["sparsity_all_params"] < rep["sparsity"]


def test_same_seed_same_masks_and_other_data_other_masks():
    prints = []
    for data_seed in (0, 0, 1):
        model, opt, pruner = _setup(seed=0)
        _train(model, opt, 30, data_seed=data_seed)
        prints.append(pruner.mask_fingerprint())
    assert prints[0] == prints[1]
    assert prints[0] != prints[2]


def test_resume_from_state_dict_equals_uninterrupted_run():
    model, opt, pruner = _setup()
    _train(model, opt, T)

    model_a, opt_a, pruner_a = _setup()
    _train(model_a, opt_a, 23)  # stop between pruning steps, mid-schedule
    saved = {
        "model": {k: v.clone() for k, v in model_a.state_dict().items()},
        "opt": opt_a.state_dict(),
        "pruner": pruner_a.state_dict(),
    }
    model_b, opt_b, pruner_b = _setup(seed=5)  # fresh objects, even another seed
    model_b.load_state_dict(saved["model"])
    opt_b.load_state_dict(saved["opt"])
    pruner_b.load_state_dict(saved["pruner"])
    assert pruner_b.step == 23
    _train(model_b, opt_b, T - 23, start=23)

    assert pruner_b.mask_fingerprint() == pruner.mask_fingerprint()
    for (k, a), b in zip(model.state_dict().items(), model_b.state_dict().values()):
        assert torch.equal(a, b), k


def test_grad_scaler_skipped_steps_are_not_counted():
    model, opt, pruner = _setup()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**4)
    skipped = {7, 8}
    for i in range(1, 21):
        x, y = _batch(i)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        scaler.scale(loss).backward()
        if i in skipped:
            model.fc.weight.grad[0, 0] = float("inf")
        scaler.step(opt)
        scaler.update()
    assert pruner.step == 20 - len(skipped)
    assert pruner.sparsity > 0  # pruning steps 5 and 10 happened with finite gradients
    for name, p in pruner.params.items():
        assert not bool(p.detach()[~pruner.masks[name]].any())


def test_accelerate_prepared_optimizer_with_gradient_accumulation():
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=2)
    torch.manual_seed(0)
    model = timm.create_model("fggp_resnet20_cifar")
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model, opt = accelerator.prepare(model, opt)
    pruner = Pruner(model, opt, final_sparsity=0.8, total_steps=20, interval=4)
    for i in range(1, 41):
        x, y = _batch(i)
        with accelerator.accumulate(model):
            loss = F.cross_entropy(model(x), y)
            accelerator.backward(loss)
            opt.step()
            opt.zero_grad()
    assert pruner.step == 20  # 40 micro-batches, 20 optimizer steps
    assert pruner.sparsity == pytest.approx(0.8, abs=1.0 / pruner.n_total)


def test_sparse_start_uses_erk_masks():
    model, opt, pruner = _setup(initial_sparsity=0.5)
    assert pruner.sparsity == pytest.approx(0.5, abs=1e-3)
    assert pruner.schedule.initial_density == 0.5
    for name, p in pruner.params.items():
        assert not bool(p.detach()[~pruner.masks[name]].any())
    # ERK: layers differ in density, and the same seed draws the same masks
    dens = list(pruner.layer_sparsity().values())
    assert max(dens) - min(dens) > 0.1
    _, _, again = _setup(initial_sparsity=0.5)
    assert again.mask_fingerprint() == pruner.mask_fingerprint()
    _train(model, opt, T)
    assert pruner.sparsity == pytest.approx(FINAL, abs=1.0 / pruner.n_total)


def test_erk_budget_counts_the_first_conv_like_the_authors():
    from fggp_hub.pruning import erk_masks, prunable_parameters
    from fggp_hub.pruning.targets import first_conv_name

    model, _, pruner = _setup(initial_sparsity=0.5)
    every = prunable_parameters(model, include_first_conv=True)
    first = f"{first_conv_name(model)}.weight"
    assert first in every and first not in pruner.params  # kept dense, but part of the ERK budget
    drawn = dict(zip(every, erk_masks(list(every.values()), 0.5, seed=0)))
    assert bool(drawn[first].all())  # ERK gives the first conv density 1 on this backbone
    for name, mask in pruner.masks.items():
        assert torch.equal(mask, drawn[name])
    active = sum(int(m.sum()) for m in pruner.masks.values())
    alone = sum(int(m.sum()) for m in erk_masks(list(pruner.params.values()), 0.5, seed=0))
    assert alone - active == pytest.approx(every[first].numel() / 2, abs=len(every))  # the first conv's share


def test_exclude_takes_module_or_weight_names_and_refuses_unknown_ones():
    model = timm.create_model("fggp_resnet20_cifar")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    by_module = Pruner(model, opt, final_sparsity=0.5, total_steps=20, interval=2, exclude=["fc"])
    by_weight = Pruner(model, opt, final_sparsity=0.5, total_steps=20, interval=2, exclude=["fc.weight"])
    assert "fc.weight" not in by_module.params and set(by_module.params) == set(by_weight.params)
    with pytest.raises(ValueError, match="no Conv2d/Linear layer named 'head'"):
        Pruner(model, opt, final_sparsity=0.5, total_steps=20, interval=2, exclude=["head.weight"])


def test_rate_too_small_for_the_schedule_raises_at_construction():
    model = timm.create_model("fggp_resnet20_cifar")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    schedule = CubicSchedule(total_steps=100, final_density=0.02, interval=20)
    n = sum(p.numel() for p in fggp_hub.pruning.prunable_parameters(model).values())
    needed = min_feasible_rate(schedule, n)
    assert 0.3 < needed < 1.0
    with pytest.raises(ValueError, match=r"r=0\.1 is too small for this schedule.*rate >= "):
        Pruner(model, opt, schedule=schedule, rate=0.1)
    Pruner(model, opt, schedule=schedule, rate=needed + 1e-3).remove()
    # GMP has no rate to be infeasible
    Pruner(model, opt, schedule=schedule, method="gmp", rate=0.1).remove()


def test_adam_state_zeroed_and_first_conv_option():
    torch.manual_seed(0)
    model = timm.create_model("fggp_resnet20_cifar")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    pruner = Pruner(model, opt, final_sparsity=0.7, total_steps=20, interval=2, include_first_conv=True)
    assert "conv1.weight" in pruner.params
    _train(model, opt, 20)
    for name, p in pruner.params.items():
        pruned = ~pruner.masks[name]
        assert not bool(p.detach()[pruned].any())
        for key in ("exp_avg", "exp_avg_sq"):
            assert not bool(opt.state[p][key][pruned].any()), (name, key)
    assert pruner.layer_sparsity()["conv1.weight"] >= 0.0


def test_fixed_masks_for_sparse_fine_tuning():
    model, opt, pruner = _setup()
    _train(model, opt, T)
    pruner.remove()
    opt2 = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    fixed = Pruner(model, opt2)  # no schedule: current zeros are the mask
    before = fixed.mask_fingerprint()
    _train(model, opt2, 10, start=T)
    assert fixed.mask_fingerprint() == before
    assert fixed.sparsity == pytest.approx(pruner.sparsity)


def test_any_timm_model_is_prunable():
    torch.manual_seed(0)
    model = timm.create_model("resnet18", num_classes=10)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    pruner = Pruner(model, opt, final_sparsity=0.5, total_steps=4, interval=1, method="gmp")
    assert "conv1.weight" not in pruner.params and "fc.weight" in pruner.params
    for t in range(4):
        x, y = torch.randn(2, 3, 32, 32), torch.tensor([1, 2])
        F.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()
    assert pruner.sparsity == pytest.approx(0.5, abs=1e-6)


def test_sparsity_stats_counts_each_tensor_once(monkeypatch):
    """Exact numbers by hand, and one count_nonzero per parameter (load() recounts every model it returns)."""
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(4, 4, 1, bias=False), torch.nn.Linear(4, 2))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.0)
        model[1].weight[:2] = 0  # 8 of 16 zero
        model[2].weight[0] = 0  # 4 of 8 zero
        model[2].bias[0] = 0  # not prunable: counted in sparsity_all_params only
    calls = []
    real = torch.Tensor.count_nonzero
    monkeypatch.setattr(torch.Tensor, "count_nonzero", lambda t, *a, **k: calls.append(1) or real(t, *a, **k))
    stats = fggp_hub.sparsity_stats(model)  # the first conv ("0") stays dense: not prunable
    assert len(calls) == len(list(model.parameters())) == 5
    assert set(stats["layers"]) == {"1.weight", "2.weight"}
    assert stats["layers"]["1.weight"]["zeros"] == 8 and stats["layers"]["2.weight"]["sparsity"] == 0.5
    assert stats["sparsity"] == 12 / 24 and stats["prunable_params"] == 24
    assert stats["total_params"] == 108 + 4 + 16 + 8 + 2 and stats["nonzero_params"] == stats["total_params"] - 13
