"""WGAN-GP, drift, matching-aware critic loss and generator loss: closed forms and signs."""
import torch

from stylegan_t2i.gan.losses import (
    MISMATCH_MARGIN,
    MISMATCH_WEIGHT,
    alignment_loss,
    critic_loss,
    generator_loss,
    gradient_penalty,
)
from stylegan_t2i.images import zoom_and_shift


def test_penalty_of_linear_critic_is_closed_form():
    # D(x) = <a, x>: grad_x D = a everywhere, so the penalty is weight * (||a|| - 1)^2 exactly.
    torch.manual_seed(0)
    a = torch.randn(3, 4, 4, dtype=torch.float64)
    a = (3.0 * a / a.norm()).requires_grad_(True)       # ||a|| = 3
    real = torch.randn(5, 3, 4, 4, dtype=torch.float64)
    fake = torch.randn(5, 3, 4, 4, dtype=torch.float64)
    text = torch.randn(5, 2, dtype=torch.float64)
    penalty, grad_norm = gradient_penalty(lambda x, c: (x * a).flatten(1).sum(1), real, fake, text,
                                         torch.rand(5, dtype=torch.float64), weight=10.0)
    torch.testing.assert_close(penalty, torch.tensor(40.0, dtype=torch.float64))
    torch.testing.assert_close(grad_norm, torch.tensor(3.0, dtype=torch.float64))
    # create_graph=True: the penalty differentiates w.r.t. the critic, d/da = 10 * 2 (||a|| - 1) a / ||a||.
    penalty.backward()
    torch.testing.assert_close(a.grad, 10 * 2 * (3 - 1) * a.detach() / 3)


def test_penalty_evaluates_per_sample_interpolates_with_captions():
    real = torch.randn(6, 3, 2, 2)
    fake = torch.randn(6, 3, 2, 2)
    text = torch.randn(6, 5)
    seen = {}

    def critic_fn(x, c):
        seen["x"], seen["c"] = x.detach(), c
        return x.square().flatten(1).sum(1)

    eps_in = torch.rand(6, generator=torch.Generator().manual_seed(0))
    gradient_penalty(critic_fn, real, fake, text, eps_in)
    assert seen["c"] is text
    eps = ((seen["x"] - fake) / (real - fake)).flatten(1)       # x = eps * real + (1 - eps) * fake
    torch.testing.assert_close(eps, eps_in[:, None].expand_as(eps), atol=1e-4, rtol=1e-4)


def test_critic_loss_terms_and_signs():
    real = torch.tensor([1.0, 3.0])
    fake = torch.tensor([-1.0, 0.0])
    mismatch = torch.tensor([0.5, 1.5])    # gaps D(x,c) - D(x,c') = 0.5 and 1.5
    out = critic_loss(real, fake, mismatch, drift=0.001)
    torch.testing.assert_close(out["wdist"], torch.tensor(2.5))
    torch.testing.assert_close(out["drift"], torch.tensor(0.001 * 5.0))
    hinge = (max(0.0, MISMATCH_MARGIN - 0.5) + max(0.0, MISMATCH_MARGIN - 1.5)) / 2
    torch.testing.assert_close(out["mismatch"], torch.tensor(MISMATCH_WEIGHT * hinge))
    torch.testing.assert_close(out["loss"], torch.tensor(-2.5 + 0.005 + MISMATCH_WEIGHT * hinge))
    # The critic minimises: the loss falls when real scores rise and fake / mismatched scores fall.
    assert critic_loss(real + 0.1, fake, mismatch)["loss"] < out["loss"]
    assert critic_loss(real, fake - 0.1, mismatch)["loss"] < out["loss"]
    assert critic_loss(real, fake, mismatch - 0.1)["loss"] < out["loss"]
    # Bounded: once every mismatched pair is a margin below its matched pair, no further push.
    far = critic_loss(real, fake, real - MISMATCH_MARGIN - 5)
    farther = critic_loss(real, fake, real - MISMATCH_MARGIN - 50)
    torch.testing.assert_close(far["loss"], farther["loss"])
    torch.testing.assert_close(far["mismatch"], torch.tensor(0.0))
    # Without mismatched pairs: plain WGAN + drift.
    plain = critic_loss(real, fake, None)
    torch.testing.assert_close(plain["loss"], torch.tensor(-2.5 + 0.005))
    torch.testing.assert_close(plain["mismatch"], torch.tensor(0.0))


def test_critic_loss_gradients():
    real = torch.tensor([1.0, 3.0], requires_grad=True)
    fake = torch.tensor([-1.0, 0.0], requires_grad=True)
    mismatch = torch.tensor([0.5, 1.5], requires_grad=True)    # only the first pair is inside the margin
    critic_loss(real, fake, mismatch, drift=0.0)["loss"].backward()
    torch.testing.assert_close(real.grad, torch.tensor([-0.5 - MISMATCH_WEIGHT / 2, -0.5]))
    torch.testing.assert_close(fake.grad, torch.full([2], 0.5))
    torch.testing.assert_close(mismatch.grad, torch.tensor([MISMATCH_WEIGHT / 2, 0.0]))


def test_generator_loss_is_negative_mean():
    scores = torch.tensor([1.0, -3.0, 5.0], requires_grad=True)
    loss = generator_loss(scores)
    torch.testing.assert_close(loss, torch.tensor(-1.0))
    loss.backward()
    torch.testing.assert_close(scores.grad, torch.full([3], -1 / 3))


def test_mismatch_over_several_negatives_per_image_and_invalid_pairs():
    real = torch.tensor([1.0, 3.0], requires_grad=True)
    wrong = torch.tensor([[0.5, 2.0], [1.5, 0.0]], requires_grad=True)   # gaps 0.5, -1 | 1.5, 3
    valid = torch.tensor([[True, False], [True, True]])
    out = critic_loss(real, torch.zeros(2), wrong, drift=0.0, mismatch_valid=valid)
    # Mean over all 4 pairs, the invalid one counting 0: (0.5 + 0 + 0 + 0) / 4.
    torch.testing.assert_close(out["mismatch"], torch.tensor(MISMATCH_WEIGHT * 0.5 / 4))
    out["loss"].backward()
    torch.testing.assert_close(wrong.grad, torch.tensor([[MISMATCH_WEIGHT / 4, 0.0], [0.0, 0.0]]))
    torch.testing.assert_close(real.grad, torch.tensor([-0.5 - MISMATCH_WEIGHT / 4, -0.5]))


def test_alignment_loss_is_one_minus_cosine_and_pulls_toward_the_caption():
    text = torch.nn.functional.normalize(torch.randn(3, 8), dim=1)
    torch.testing.assert_close(alignment_loss(text, text), torch.tensor(0.0))
    torch.testing.assert_close(alignment_loss(-text, text), torch.tensor(2.0))
    raw = torch.randn(3, 8, requires_grad=True)
    loss = alignment_loss(torch.nn.functional.normalize(raw, dim=1), text)
    expected = (1 - torch.nn.functional.cosine_similarity(raw, text, dim=1)).mean()
    torch.testing.assert_close(loss, expected)
    loss.backward()
    stepped = torch.nn.functional.normalize(raw.detach() - 0.1 * raw.grad, dim=1)
    assert alignment_loss(stepped, text) < loss


def test_zoom_and_shift_moves_content_by_the_given_fraction():
    img = torch.zeros(2, 1, 8, 8)
    img[:, :, 3, 2] = 1.0                                         # one bright pixel at (y=3, x=2)
    out = zoom_and_shift(img, torch.tensor([[0.25, 0.0], [0.0, -0.125]]))
    assert out[0, 0].argmax() == 3 * 8 + 4                        # dx = +2 px
    assert out[1, 0].argmax() == 2 * 8 + 2                        # dy = -1 px
    torch.testing.assert_close(zoom_and_shift(img, torch.zeros(2, 2)), img)
    shifted = zoom_and_shift(img.requires_grad_(True), torch.full((2, 2), 0.1))
    (grad,) = torch.autograd.grad(shifted.sum(), img)
    assert grad.abs().sum() > 0


def test_zoom_enlarges_about_the_centre():
    img = torch.zeros(1, 1, 16, 16)
    img[:, :, 6:10, 6:10] = 1.0                                   # a centred 4x4 square
    out = zoom_and_shift(img, torch.zeros(1, 2), torch.tensor([2.0]))
    assert out[0, 0, 5:11, 5:11].min() > 0.99 and out[0, 0, 3:13, 3:13].sum() > 50  # now about 8x8, centred
    assert out[0, 0, :3].max() < 0.01 and out[0, 0, 13:].max() < 0.01
    smaller = zoom_and_shift(img, torch.zeros(1, 2), torch.tensor([0.5]))
    assert 3.5 < smaller.sum() < 4.5                              # a quarter of the area
    torch.testing.assert_close(zoom_and_shift(img, torch.zeros(1, 2), torch.ones(1)), img)
