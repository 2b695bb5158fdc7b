"""Feature focus: running statistics, predictability weights and the weighted regression by hand."""
import pytest
import torch

from mmkd_ros.train import config as config_lib
from mmkd_ros.core.errors import ConfigError
from mmkd_ros.train.distributed import Runtime
from mmkd_ros.train.focus import FeatureFocus
from mmkd_ros.train.objectives import build_objectives


def test_first_batch_sets_statistics_and_r2_by_hand():
    teacher = torch.tensor([[0.0, 1.0], [2.0, 3.0]])  # per-dim mean [1, 2], variance [1, 1]
    projected = torch.tensor([[0.0, 2.0], [2.0, 2.0]])  # dim 0 exact; dim 1 always off by 1
    focus = FeatureFocus(2, momentum=0.5, floor=0.2)
    focus.update(teacher, projected)
    assert torch.allclose(focus.mean, torch.tensor([1.0, 2.0]))
    assert torch.allclose(focus.var, torch.tensor([1.0, 1.0]))
    assert torch.allclose(focus.r2, torch.tensor([1.0, 0.0]))  # 1 - err/var, clipped at 0
    assert torch.allclose(focus.weights(), torch.tensor([1.0, 0.2]))  # floor + (1 - floor) * r2
    # Weighted regression in standardised units: dim 0 error 0, dim 1 error 1 on both samples.
    expected = (1.0 * 0.0 + 0.2 * 1.0) / 1.2
    assert focus.regression_loss(projected, teacher).item() == pytest.approx(expected, abs=1e-4)


def test_later_batches_are_averaged_with_the_momentum():
    focus = FeatureFocus(1, momentum=0.75, floor=0.0)
    focus.update(torch.tensor([[0.0], [2.0]]), torch.tensor([[0.0], [2.0]]))  # r2 1
    focus.update(torch.tensor([[0.0], [2.0]]), torch.tensor([[2.0], [0.0]]))  # err 4 > var 1: r2 0
    assert focus.r2.item() == pytest.approx(0.75)


def test_floor_one_switches_focusing_off_and_focused_view_is_standardised():
    focus = FeatureFocus(3, floor=1.0)
    generator = torch.Generator().manual_seed(0)
    teacher = torch.randn(64, 3, generator=generator) * torch.tensor([1.0, 10.0, 0.1]) + 5
    focus.update(teacher, torch.zeros(64, 3))
    assert torch.equal(focus.weights(), torch.ones(3))
    view = focus.focused(teacher)
    assert torch.allclose(view.mean(0), torch.zeros(3), atol=1e-4)
    assert torch.allclose(view.std(0, unbiased=False), torch.ones(3), atol=1e-3)


def test_unpredictable_dimension_loses_its_say():
    generator = torch.Generator().manual_seed(0)
    focus = FeatureFocus(2, momentum=0.9, floor=0.1)
    for _ in range(50):
        teacher = torch.randn(32, 2, generator=generator)
        predicted = torch.stack([teacher[:, 0], torch.randn(32, generator=generator)], 1)  # dim 1: noise
        focus.update(teacher, predicted)
    w = focus.weights()
    assert w[0] > 0.95 and w[1] < 0.15


def test_weights_all_zero_give_a_zero_regression_not_nan():
    focus = FeatureFocus(2, floor=0.0)
    teacher = torch.tensor([[0.0, 1.0], [2.0, -1.0]])
    focus.update(teacher, -teacher)  # the prediction explains nothing: r2 0, every weight 0
    assert focus.weights().tolist() == [0.0, 0.0]
    loss = focus.regression_loss(-teacher, teacher)
    assert loss.item() == 0.0


@pytest.mark.parametrize("override", ["distill.focus_floor=1.5", "distill.focus_floor=0", "distill.focus_momentum=1.0",
                                      "distill.adv_warmup_epochs=-1", "distill.d_steps=0",
                                      "distill.focus_start=1.0", "distill.focus_start=-0.1"])
def test_bad_focus_settings_are_config_errors(override):
    with pytest.raises(ConfigError, match=override.split("=")[0].split(".")[1]):
        config_lib.load(None, [override])


def test_focus_start_holds_every_weight_at_one_until_its_step_then_weights_by_r2():
    focus = FeatureFocus(2, momentum=0.5, floor=0.2, start_steps=2)
    teacher = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    projected = torch.tensor([[0.0, 2.0], [2.0, 2.0]])  # dimension 0 predicted, dimension 1 not
    for expected in ([1.0, 1.0], [1.0, 1.0], [1.0, 0.2]):
        focus.update(teacher, projected)
        assert torch.allclose(focus.weights(), torch.tensor(expected))
    state = focus.state_dict()
    again = FeatureFocus(2, momentum=0.5, floor=0.2, start_steps=2)
    again.load_state_dict(state)  # a resumed run keeps its step count
    assert int(again.steps) == 3 and torch.allclose(again.weights(), torch.tensor([1.0, 0.2]))


def test_focus_start_is_a_share_of_the_whole_schedule():
    cfg = config_lib.load(None, ["distill.epochs=8", "distill.focus_start=0.25"]).distill
    _, focus = build_objectives(cfg, teacher_dim=4, num_classes=3, runtime=Runtime.start("cpu"), steps_per_epoch=10)
    assert focus.start_steps == 20  # a quarter of 8 epochs x 10 steps
