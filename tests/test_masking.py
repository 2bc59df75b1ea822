import pytest
import torch

from models.masking import keep_tokens, num_visible_tokens, patchify, random_mask, restore_tokens, unpatchify


@pytest.mark.parametrize("num_tokens,ratio", [(64, 0.5), (256, 0.5), (49, 0.3), (64, 0.75), (10, 0.99)])
def test_mask_keeps_int_l_times_one_minus_r(num_tokens, ratio):
    m = random_mask(8, num_tokens, ratio, "cpu")
    keep = int(num_tokens * (1 - ratio))
    assert m.ids_keep.shape == (8, keep)
    assert torch.equal(m.mask.sum(1), torch.full((8,), float(num_tokens - keep)))
    # The kept ids are exactly the zeros of the binary mask, per sample.
    for i in range(8):
        visible = set(torch.nonzero(m.mask[i] == 0).flatten().tolist())
        assert visible == set(m.ids_keep[i].tolist())


def test_masks_differ_between_samples():
    m = random_mask(16, 64, 0.5, "cpu")
    assert len({tuple(row.tolist()) for row in m.mask}) > 1


def test_restore_inverts_keep():
    torch.manual_seed(0)
    x = torch.randn(4, 64, 8)
    m = random_mask(4, 64, 0.5, "cpu")
    marker = torch.full((1, 1, 8), 1234.0)
    restored = restore_tokens(keep_tokens(x, m.ids_keep), m.ids_restore, marker)
    visible = m.mask == 0
    assert torch.equal(restored[visible], x[visible])
    assert torch.all(restored[~visible] == 1234.0)


def test_patchify_roundtrip_and_order():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    p = patchify(x, 4)
    assert p.shape == (2, 4, 48)
    assert torch.equal(unpatchify(p, 4, 3), x)
    # token 1 is the top-right patch (row-major), channels last within the patch
    assert p[0, 1, 0] == x[0, 0, 0, 4] and p[0, 1, 1] == x[0, 1, 0, 4]


def test_zero_ratio_means_no_mask_in_the_loss():
    """Ratio 0 (finetune, DiT) must not build a mask at all: the loss then averages over every token and the
    network runs without the keep/restore gathers."""
    from diffusion.loss import MaskDiTLoss

    loss = MaskDiTLoss(patch_size=2, num_tokens=64)
    assert loss.make_mask(torch.rand(2, 64), 0.0) is None
    assert loss.make_mask(torch.rand(2, 64), 0.5).mask.sum(1).tolist() == [32.0, 32.0]
    assert num_visible_tokens(64, 0.3) == 44  # int(64 · 0.7), MaskDiT's floor
