"""Loss functions of the method: plain tensor-in, tensor-out functions (no modules, no state).

Notation: ``D(.)`` is the discriminator's raw logit, ``x`` a teacher feature (real), ``G(z)`` a
projected student feature (fake); ``E`` is the mean over the batch. Every function returns a
scalar tensor.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

GAN_LOSSES = ("nsgan", "lsgan", "hinge")


# --- adversarial: discriminator side -------------------------------------------------------


def nsgan_disc_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating GAN, discriminator: ``-E[log s(D(x))] - E[log(1 - s(D(G(z))))]``.

    Goodfellow et al., 2014, "Generative Adversarial Nets". Computed as binary cross-entropy with
    logits (numerically stable); ``real_logits``, ``fake_logits``: [B].
    """
    real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return real + fake


def lsgan_disc_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Least-squares GAN, discriminator: ``0.5 E[(D(x) - 1)^2] + 0.5 E[D(G(z))^2]``.

    Mao et al., 2017, "Least Squares Generative Adversarial Networks" (a=0, b=c=1).
    """
    return 0.5 * ((real_logits - 1.0) ** 2).mean() + 0.5 * (fake_logits**2).mean()


def hinge_disc_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Hinge loss, discriminator: ``E[max(0, 1 - D(x))] + E[max(0, 1 + D(G(z)))]``.

    Lim & Ye, 2017, "Geometric GAN"; Miyato et al., 2018 (with spectral normalisation).
    """
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


# --- adversarial: generator (student) side --------------------------------------------------


def nsgan_gen_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating GAN, generator: ``-E[log s(D(G(z)))]`` (Goodfellow et al., 2014, sec. 3).

    Preferred over minimising ``log(1 - s(D(G(z))))`` because it still gives gradient when the
    discriminator confidently rejects the student early in training.
    """
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def lsgan_gen_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Least-squares GAN, generator: ``0.5 E[(D(G(z)) - 1)^2]`` (Mao et al., 2017)."""
    return 0.5 * ((fake_logits - 1.0) ** 2).mean()


def hinge_gen_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Hinge loss, generator: ``-E[D(G(z))]`` (Lim & Ye, 2017; Miyato et al., 2018)."""
    return -fake_logits.mean()


def disc_loss(kind: str, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator loss named by ``kind`` (``nsgan`` | ``lsgan`` | ``hinge``)."""
    if kind == "nsgan":
        return nsgan_disc_loss(real_logits, fake_logits)
    if kind == "lsgan":
        return lsgan_disc_loss(real_logits, fake_logits)
    if kind == "hinge":
        return hinge_disc_loss(real_logits, fake_logits)
    raise ValueError(f"unknown GAN loss {kind!r}; known: {', '.join(GAN_LOSSES)}")


def gen_loss(kind: str, fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator (student) loss named by ``kind`` (``nsgan`` | ``lsgan`` | ``hinge``)."""
    if kind == "nsgan":
        return nsgan_gen_loss(fake_logits)
    if kind == "lsgan":
        return lsgan_gen_loss(fake_logits)
    if kind == "hinge":
        return hinge_gen_loss(fake_logits)
    raise ValueError(f"unknown GAN loss {kind!r}; known: {', '.join(GAN_LOSSES)}")


# --- adversarial with a task: the discriminator also classifies ------------------------------


def task_disc_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Discriminator with a task, 2K-way: ``CE(D(x), c) + CE(D(G(z)), K + c)``.

    Garcia, Morerio & Murino, TPAMI 2019, "Learning with Privileged Information via Adversarial
    Discriminative Modality Distillation": D's logits [B, 2K] say both the class and the source; the
    first K mean "teacher feature of class c", the last K "student feature of class c". ``classes``
    [B] is each sample's class (its label, or the teacher's when it has none).
    """
    k = real_logits.shape[-1] // 2
    return F.cross_entropy(real_logits, classes) + F.cross_entropy(fake_logits, classes + k)


def task_gen_loss(fake_logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Student side of :func:`task_disc_loss`: ``CE(D(G(z)), c)``, its feature taken for the teacher's of class c."""
    return F.cross_entropy(fake_logits, classes)


# --- discriminator regularisers ---------------------------------------------------------------


def r1_penalty(real_logits: torch.Tensor, real_inputs: torch.Tensor) -> torch.Tensor:
    """R1 penalty: ``0.5 E[||grad_x D(x)||^2]`` on real samples only.

    Mescheder et al., 2018, "Which Training Methods for GANs do actually Converge?". ``real_inputs``
    [B, D] must have ``requires_grad=True`` and ``real_logits`` [B] must be computed from them; the
    graph is kept so the penalty can be backpropagated into the discriminator. Multiply by gamma.
    """
    (grad,) = torch.autograd.grad(real_logits.sum(), real_inputs, create_graph=True)  # [B, D]
    return 0.5 * grad.pow(2).flatten(1).sum(1).mean()


def gradient_penalty(interp_logits: torch.Tensor, interp_inputs: torch.Tensor) -> torch.Tensor:
    """WGAN-GP penalty: ``E[(||grad_x D(x_hat)||_2 - 1)^2]`` at ``x_hat`` between real and fake.

    Gulrajani et al., 2017, "Improved Training of Wasserstein GANs". The caller builds
    ``x_hat = e*x + (1-e)*G(z)``, ``e ~ U(0,1)`` per sample, with ``requires_grad=True``.
    """
    (grad,) = torch.autograd.grad(interp_logits.sum(), interp_inputs, create_graph=True)  # [B, D]
    return (grad.flatten(1).norm(2, dim=1) - 1.0).pow(2).mean()


# --- distillation baselines and supervision ---------------------------------------------------


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0,
            weights: torch.Tensor | None = None) -> torch.Tensor:
    """Hinton KD: ``T^2 * KL(softmax(t/T) || softmax(s/T))``, mean over the batch.

    Hinton, Vinyals & Dean, 2015, "Distilling the Knowledge in a Neural Network". The ``T^2``
    factor keeps the gradient scale independent of ``T``. Logits: [B, K]. ``weights`` [B]: each
    pair's share, ``T^2 * sum_b w_b KL_b / B`` (a pair of weight 0 teaches nothing).
    """
    log_p_student = F.log_softmax(student_logits / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=-1)
    if weights is None:
        kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    else:
        per_pair = F.kl_div(log_p_student, log_p_teacher, reduction="none", log_target=True).sum(-1)  # [B]
        kl = (weights * per_pair).sum() / len(per_pair)
    return kl * temperature**2


def rank_agreement(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Kendall's tau between each pair's student and teacher class scores: [B] in [-1, 1].

    ``mean_{j<k} sign(s_j - s_k) * sign(t_j - t_k)`` over the K(K-1)/2 class pairs; with two classes,
    +1 where both name the same class, -1 where they differ. C2KD (Huo et al. CVPR 2024) distils
    only pairs whose rankings agree: where they do not, the teacher's answer rests on what the
    student's modality does not show.
    """
    k = student_logits.shape[1]
    ds = student_logits.unsqueeze(2) - student_logits.unsqueeze(1)  # [B, K, K]
    dt = teacher_logits.unsqueeze(2) - teacher_logits.unsqueeze(1)
    upper = torch.triu(torch.ones(k, k, dtype=torch.bool, device=student_logits.device), diagonal=1)
    concordance = (torch.sign(ds) * torch.sign(dt))[:, upper]  # [B, K(K-1)/2]
    return concordance.mean(1)


def feature_l2_loss(student_features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
    """Feature regression: ``E_b[ mean_d (s_bd - t_bd)^2 ]`` (plain MSE over [B, D]).

    FitNets (Romero et al., 2015, "FitNets: Hints for Thin Deep Nets") with the student feature
    already projected to the teacher's size.
    """
    return F.mse_loss(student_features, teacher_features)


def hallucination_loss(student_map: torch.Tensor, teacher_map: torch.Tensor) -> torch.Tensor:
    """Hallucination stream (Hoffman et al. CVPR 2016): ``mean_{b,c,y,x} (s - (t - mu_c) / sigma_c)^2``.

    ``student_map`` [B, C, h', w'] is the student's adapted mid-level map, ``teacher_map`` [B, C, h, w]
    the teacher's NIR-branch map (no graph); each teacher channel is standardised by its mean and
    std over the batch and locations, so every channel weighs alike whatever its scale. A student
    map of another size is average-pooled to the teacher's.
    """
    if student_map.shape[-2:] != teacher_map.shape[-2:]:
        student_map = F.adaptive_avg_pool2d(student_map, teacher_map.shape[-2:])
    mean = teacher_map.mean(dim=(0, 2, 3), keepdim=True)  # [1, C, 1, 1]
    std = teacher_map.std(dim=(0, 2, 3), keepdim=True) + 1e-5  # [1, C, 1, 1]
    return F.mse_loss(student_map, (teacher_map - mean) / std)


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy over labelled samples only; label ``-1`` marks an unlabelled pair.

    With smoothing ``e`` the target is ``(1-e)*onehot + e/K`` (Szegedy et al., 2016, "Rethinking
    the Inception Architecture"). Returns 0 (with a graph) when the batch has no labelled sample,
    instead of the NaN that ``F.cross_entropy`` gives for an all-ignored batch.
    """
    labelled = labels >= 0  # [B]
    if not bool(labelled.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[labelled], labels[labelled], label_smoothing=label_smoothing)
