"""Every registered model through forward and backward, with the feature shapes the method relies on."""
import pytest
import torch

from mmkd_ros.models import build_model, model_names
from mmkd_ros.models.registry import MODELS

torch.set_num_threads(1)
SIZE = 64
SMALL = {"teacher_resnet18_mid": {"width": 0.125}, "teacher_resnet_tiny": {"width": 0.125},
         "student_mobilenetv3_small": {"width": 0.25}, "student_tiny": {"width": 0.5},
         "rgb_twin_resnet18_mid": {"width": 0.125}}


def backward_reaches_every_parameter(model: torch.nn.Module, loss: torch.Tensor) -> None:
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing[:5]}"


def test_registry_lists_the_documented_models():
    assert set(MODELS) >= {"teacher_resnet18_mid", "teacher_resnet_tiny", "student_mobilenetv3_small",
                           "student_tiny", "discriminator_mlp", "projector_linear"}
    with pytest.raises(KeyError, match="unknown model"):
        build_model("resnet9000", num_classes=3)


@pytest.mark.parametrize("name", model_names("teacher_"))
@pytest.mark.parametrize("rgb_channels,nir_channels", [(3, 1), (1, 1), (3, 4)])
@pytest.mark.parametrize("fuse_at", [1, 2, 3])
def test_teacher_forward_backward(name, rgb_channels, nir_channels, fuse_at):
    model = build_model(name, num_classes=5, rgb_channels=rgb_channels, nir_channels=nir_channels,
                        fuse_at=fuse_at, **SMALL[name])
    rgb, nir = torch.randn(2, rgb_channels, SIZE, SIZE), torch.randn(2, nir_channels, SIZE, SIZE)
    features = model.forward_features(rgb, nir)
    assert features.shape == (2, model.num_features)
    logits = model.forward_head(features)
    assert logits.shape == (2, 5)
    assert torch.allclose(model(rgb, nir), logits)
    backward_reaches_every_parameter(model, logits.sum())


def test_teacher_rejects_a_bad_fusion_stage():
    with pytest.raises(ValueError, match="fuse_at"):
        build_model("teacher_resnet_tiny", num_classes=3, fuse_at=4)


@pytest.mark.parametrize("name", model_names("student_") + model_names("rgb_twin_"))
@pytest.mark.parametrize("in_channels", [1, 3, 4])
def test_student_forward_backward(name, in_channels):
    model = build_model(name, num_classes=7, in_channels=in_channels, **SMALL[name])
    rgb = torch.randn(2, in_channels, SIZE, SIZE)
    features = model.forward_features(rgb)
    assert features.shape == (2, model.num_features)
    logits = model.forward_head(features)
    assert logits.shape == (2, 7)
    backward_reaches_every_parameter(model, model(rgb).sum())


@pytest.mark.parametrize("spectral_norm", [False, True])
def test_discriminator_and_projector(spectral_norm):
    projector = build_model("projector_linear", in_features=12, out_features=20, hidden=16)
    disc = build_model("discriminator_mlp", in_features=20, hidden=8, spectral_norm=spectral_norm)
    logits = disc(projector(torch.randn(4, 12)))
    assert logits.shape == (4,)
    backward_reaches_every_parameter(disc, logits.sum())
    assert all(p.grad is not None for p in projector.parameters())


def test_default_student_is_at_most_a_fifth_of_the_default_teacher():
    from torch.utils.flop_counter import FlopCounterMode

    from mmkd_ros.train.config import Config

    cfg = Config()
    teacher = build_model(cfg.teacher.arch, num_classes=7, width=cfg.teacher.width, fuse_at=cfg.teacher.fuse_at).eval()
    student = build_model(cfg.student.arch, num_classes=7, width=cfg.student.width).eval()
    size = cfg.data.input_size

    def params(m):
        return sum(p.numel() for p in m.parameters())

    def flops(m, *x):
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            m(*x)
        return counter.get_total_flops()

    assert params(student) <= params(teacher) / 5
    assert flops(student, torch.zeros(1, 3, *size)) <= flops(teacher, torch.zeros(1, 3, *size), torch.zeros(1, 1, *size)) / 5


def test_rgb_twin_is_the_teacher_without_nir():
    """The capacity control: the teacher's parameter count, both branches fed the visible image."""
    teacher = build_model("teacher_resnet18_mid", num_classes=5, rgb_channels=1, nir_channels=1, width=0.25)
    twin = build_model("rgb_twin_resnet18_mid", num_classes=5, in_channels=1, width=0.25)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(twin) == count(teacher)
    twin.load_state_dict(teacher.state_dict())
    rgb = torch.randn(2, 1, SIZE, SIZE)
    teacher.eval(), twin.eval()
    assert torch.allclose(twin(rgb), teacher(rgb, rgb))


def test_nir_dropout_zeroes_the_nir_map_in_training_only():
    torch.manual_seed(0)
    teacher = build_model("teacher_resnet_tiny", num_classes=3, width=0.125, nir_dropout=0.999)
    rgb, nir = torch.randn(6, 3, 32, 32), torch.randn(6, 1, 32, 32)
    teacher.train()  # every sample's NIR map dropped (p 0.999): the fused feature ignores NIR
    assert torch.allclose(teacher.forward_features(rgb, nir), teacher.forward_features(rgb, 5 * nir + 1))
    teacher.eval()  # teaching and running: NIR always counts
    assert not torch.allclose(teacher.forward_features(rgb, nir), teacher.forward_features(rgb, 5 * nir + 1))
    with pytest.raises(ValueError, match="nir_dropout"):
        build_model("teacher_resnet_tiny", num_classes=3, nir_dropout=1.0)
