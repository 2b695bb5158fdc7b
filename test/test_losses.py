"""Each loss against values computed by hand (see the comments for the arithmetic)."""
import math

import pytest
import torch

from mmkd_ros import losses

REAL = torch.tensor([0.0, 2.0])  # discriminator logits on teacher features
FAKE = torch.tensor([0.0, -1.0])  # discriminator logits on student features


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_nsgan_disc_loss():
    # -log s(0) = log 2, -log s(2) = softplus(-2); -log(1 - s(0)) = log 2, -log(1 - s(-1)) = softplus(-1)
    expected = (math.log(2) + softplus(-2)) / 2 + (math.log(2) + softplus(-1)) / 2
    assert losses.nsgan_disc_loss(REAL, FAKE).item() == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(0.913242, abs=1e-6)


def test_nsgan_gen_loss():
    # -log s(0) = log 2, -log s(-1) = softplus(1)
    assert losses.nsgan_gen_loss(FAKE).item() == pytest.approx((math.log(2) + softplus(1)) / 2, abs=1e-6)


def test_lsgan_losses():
    # D: 0.5*mean((0-1)^2, (2-1)^2) + 0.5*mean(0^2, (-1)^2) = 0.5 + 0.25
    assert losses.lsgan_disc_loss(REAL, FAKE).item() == pytest.approx(0.75)
    # G: 0.5*mean((0-1)^2, (-1-1)^2) = 0.5 * 2.5
    assert losses.lsgan_gen_loss(FAKE).item() == pytest.approx(1.25)


def test_hinge_losses():
    # D: mean(relu(1-0), relu(1-2)) + mean(relu(1+0), relu(1-1)) = 0.5 + 0.5
    assert losses.hinge_disc_loss(REAL, FAKE).item() == pytest.approx(1.0)
    # G: -mean(0, -1)
    assert losses.hinge_gen_loss(FAKE).item() == pytest.approx(0.5)


@pytest.mark.parametrize("kind", losses.GAN_LOSSES)
def test_named_dispatch_matches_functions(kind):
    assert losses.disc_loss(kind, REAL, FAKE).item() == getattr(losses, f"{kind}_disc_loss")(REAL, FAKE).item()
    assert losses.gen_loss(kind, FAKE).item() == getattr(losses, f"{kind}_gen_loss")(FAKE).item()
    with pytest.raises(ValueError, match="unknown GAN loss"):
        losses.disc_loss("wgan", REAL, FAKE)


def test_r1_and_wgan_gp_on_a_linear_critic():
    w = torch.tensor([3.0, 4.0], requires_grad=True)  # D(x) = w.x, so grad_x D = w with |w| = 5
    x = torch.tensor([[1.0, -1.0], [0.5, 2.0]], requires_grad=True)
    logits = x @ w
    assert losses.r1_penalty(logits, x).item() == pytest.approx(0.5 * 25.0)
    assert losses.gradient_penalty(x @ w, x).item() == pytest.approx((5.0 - 1.0) ** 2)
    # the penalty is differentiable w.r.t. the critic: d/dw 0.5*|w|^2 = w
    (grad_w,) = torch.autograd.grad(losses.r1_penalty(x @ w, x), w)
    assert torch.allclose(grad_w, torch.tensor([3.0, 4.0]))


def test_kd_loss_hinton():
    # teacher p = softmax([ln 3, 0]) = (0.75, 0.25), student p = (0.5, 0.5):
    # KL = 0.75 ln(1.5) + 0.25 ln(0.5) = 0.130812
    kl = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    student, teacher = torch.zeros(1, 2), torch.tensor([[math.log(3.0), 0.0]])
    assert losses.kd_loss(student, teacher, temperature=1.0).item() == pytest.approx(kl, abs=1e-6)
    # at T=2 the teacher logits [2 ln 3, 0] give the same distribution; the loss is scaled by T^2 = 4
    assert losses.kd_loss(student, teacher * 2, temperature=2.0).item() == pytest.approx(4 * kl, abs=1e-6)
    assert losses.kd_loss(teacher, teacher, 4.0).item() == pytest.approx(0.0, abs=1e-7)


def test_kd_loss_weights_pairs_and_rank_agreement_is_kendalls_tau():
    student = torch.tensor([[0.0, 1.0, 2.0], [2.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
    teacher = torch.tensor([[0.0, 1.0, 2.0]] * 3)
    # concordant class pairs minus discordant ones, over the 3 pairs: all, none, 2 of 3
    assert losses.rank_agreement(student, teacher).tolist() == pytest.approx([1.0, -1.0, 1.0 / 3.0])
    two = torch.tensor([[0.0, 1.0], [1.0, 0.0]])  # two classes: +1 same answer, -1 another
    assert losses.rank_agreement(two, torch.tensor([[0.0, 3.0]] * 2)).tolist() == [1.0, -1.0]
    each = [losses.kd_loss(student[i:i + 1], teacher[i:i + 1], 2.0).item() for i in range(3)]
    weighted = losses.kd_loss(student, teacher, 2.0, weights=torch.tensor([1.0, 0.0, 1.0]))
    assert weighted.item() == pytest.approx((each[0] + each[2]) / 3, rel=1e-6)  # a dropped pair still counts in B
    ones = losses.kd_loss(student, teacher, 2.0, weights=torch.ones(3))
    assert ones.item() == pytest.approx(losses.kd_loss(student, teacher, 2.0).item(), rel=1e-6)


def test_feature_l2_loss():
    # mean((1-0)^2, (2-0)^2) = 2.5
    assert losses.feature_l2_loss(torch.tensor([[1.0, 2.0]]), torch.zeros(1, 2)).item() == pytest.approx(2.5)


def test_classification_loss_ignores_unlabelled_and_smooths():
    logits = torch.tensor([[0.0, 0.0], [5.0, -5.0]])
    labels = torch.tensor([0, -1])  # the second pair is unlabelled
    assert losses.classification_loss(logits, labels).item() == pytest.approx(math.log(2))
    # smoothing 0.2 over K=2: target (0.9, 0.1) against p = (0.75, 0.25)
    smoothed = losses.classification_loss(torch.tensor([[math.log(3.0), 0.0]]), torch.tensor([0]), 0.2)
    assert smoothed.item() == pytest.approx(-(0.9 * math.log(0.75) + 0.1 * math.log(0.25)), abs=1e-6)


def test_classification_loss_all_unlabelled_is_zero_not_nan():
    logits = torch.randn(3, 4, requires_grad=True)
    loss = losses.classification_loss(logits, torch.full((3,), -1))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros(3, 4))


def test_task_discriminator_losses_by_hand():
    # K = 2, so 4 logits: [teacher c0, teacher c1, student c0, student c1]. All-zero logits give
    # log 4 for any target; a logit of log 3 on the target gives -log(3 / (3 + 3)) = log 2.
    real = torch.tensor([[math.log(3.0), 0.0, 0.0, 0.0]])  # a teacher feature of class 0, named well
    fake = torch.zeros(1, 4)
    classes = torch.tensor([0])
    # D: CE(real, class 0) + CE(fake, K + 0 = 2) = log 2 + log 4
    assert losses.task_disc_loss(real, fake, classes).item() == pytest.approx(math.log(2) + math.log(4), abs=1e-6)
    # student: CE(fake, class 0) = log 4; a student feature D names "teacher, class 1" costs more
    assert losses.task_gen_loss(fake, classes).item() == pytest.approx(math.log(4), abs=1e-6)
    wrong_class = torch.tensor([[0.0, 2.0, 0.0, 0.0]])
    assert losses.task_gen_loss(wrong_class, classes).item() > math.log(4)
