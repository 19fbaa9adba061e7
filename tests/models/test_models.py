from __future__ import annotations

import pytest
import torch
from torch import nn

from latentsearch.errors import LatentsearchError
from latentsearch.models import MODELS, create_model, layers
from latentsearch.models.layers import UpsampleConv2d
from latentsearch.models.seed_ae import SeedAutoencoder

SHAPES = [(3, 32), (1, 28), (1, 8), (3, 64)]


def _trainable(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters() if p.requires_grad)


def test_seed_ae_has_the_studys_parameter_count() -> None:
    assert _trainable(SeedAutoencoder(in_channels=3, image_size=32)) == 317_187
    # The hint head is GAP -> Dense(10): 128 * 10 + 10 more.
    assert _trainable(SeedAutoencoder(in_channels=3, image_size=32, num_classes=10)) == 318_477


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize(("channels", "size"), SHAPES)
@pytest.mark.parametrize("num_classes", [0, 10])
def test_every_model_shapes_backward_and_finite(
    name: str, channels: int, size: int, num_classes: int
) -> None:
    torch.manual_seed(0)
    model = create_model(name, in_channels=channels, image_size=size, num_classes=num_classes)
    x = torch.rand(4, channels, size, size)
    out = model(x)
    assert out.embedding.shape == (4, model.embedding_dim)
    # Every model either reconstructs its input or projects it for a contrastive loss.
    assert out.reconstruction is not None or out.projection is not None
    if out.reconstruction is not None:
        assert out.reconstruction.shape == x.shape
        rec = out.reconstruction.detach()
        assert 0.0 <= float(rec.min()) <= float(rec.max()) <= 1.0
    if num_classes:
        assert out.logits is not None and out.logits.shape == (4, num_classes)
    else:
        assert out.logits is None
    loss = out.embedding.pow(2).mean()
    if out.reconstruction is not None:
        loss = loss + ((out.reconstruction - x) ** 2).mean()
    if out.projection is not None:
        loss = loss + out.projection.pow(2).mean()
    if out.logits is not None:
        loss = loss + out.logits.logsumexp(dim=1).mean()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model.embed(x), model(x).embedding, atol=1e-5)


def test_unknown_model_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown model"):
        create_model("resnet-9000")


def test_seed_ae_rejects_sizes_its_pooling_cannot_invert() -> None:
    with pytest.raises(ValueError, match="divisible by 4"):
        SeedAutoencoder(image_size=30)


@pytest.mark.parametrize(("h", "w"), [(8, 8), (5, 7), (1, 1)])
def test_upsample_conv_equals_upsample_then_conv(h: int, w: int) -> None:
    torch.manual_seed(0)
    fused = UpsampleConv2d(6, 5, form="fused")
    nn.init.normal_(fused.bias)
    ref = nn.Conv2d(6, 5, 3, padding=1)
    ref.load_state_dict({"weight": fused.weight.detach(), "bias": fused.bias.detach()})
    x = torch.randn(3, 6, h, w, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    y = fused(x)
    y_ref = ref(nn.functional.interpolate(x_ref, scale_factor=2, mode="nearest"))
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(y)
    y.backward(g)
    y_ref.backward(g)
    torch.testing.assert_close(x.grad, x_ref.grad, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(fused.weight.grad, ref.weight.grad, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(fused.bias.grad, ref.bias.grad, atol=1e-4, rtol=1e-4)


def test_upsample_conv_forms_agree_and_auto_follows_the_measured_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    torch.manual_seed(0)
    layer = UpsampleConv2d(4, 3)
    x = torch.randn(2, 4, 5, 6)
    outs = {}
    for form in ("fused", "upsample"):
        layer.form = form
        outs[form] = layer(x)
    torch.testing.assert_close(outs["fused"], outs["upsample"], atol=1e-5, rtol=1e-5)
    assert layers.fastest_form(x) == layers.FASTEST_FORM[("cpu", torch.float32)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert layers.fastest_form(x) == layers.FASTEST_FORM[("cpu", torch.bfloat16)]
    calls: list[str] = []
    monkeypatch.setattr(layers.F, "interpolate", lambda *a, **k: calls.append("up") or a[0])
    layer.form = "auto"
    monkeypatch.setitem(layers.FASTEST_FORM, ("cpu", torch.float32), "fused")
    layer(x)
    assert calls == []
    monkeypatch.setitem(layers.FASTEST_FORM, ("cpu", torch.float32), "upsample")
    layer(x)
    assert calls == ["up"]
    with pytest.raises(ValueError, match="form must be"):
        UpsampleConv2d(4, 3, form="fast")


def test_seed_ae_embedding_is_the_pooled_retrieval_conv() -> None:
    torch.manual_seed(0)
    model = SeedAutoencoder().eval()
    x = torch.rand(2, 3, 32, 32)
    expected = model.retrieval(model.encoder(x)).mean(dim=(2, 3))
    torch.testing.assert_close(model.embed(x), expected)


def test_model_arguments_it_does_not_take_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="'seed-ae' does not take width"):
        create_model("seed-ae", width=16)


@pytest.mark.parametrize("width", [8, 16])
def test_resnet_width_sets_the_embedding_size(width: int) -> None:
    model = create_model("resnet-s", image_size=32, width=width)
    # Three stride-2 stages take 32 px down to 4 px, doubling the channels each time.
    assert model.embedding_dim == width * 8


def test_resnet_normalize_gives_unit_embeddings_of_the_same_features() -> None:
    torch.manual_seed(0)
    model = create_model("resnet-s", image_size=16, width=8).eval()
    x = torch.rand(5, 3, 16, 16)
    with torch.no_grad():
        unit = model.embed(x)
        model.normalize = False
        raw = model.embed(x)
    torch.testing.assert_close(unit.norm(dim=1), torch.ones(5))
    # Same direction: only the length differs.
    torch.testing.assert_close(unit, raw / raw.norm(dim=1, keepdim=True))
    assert not torch.allclose(raw.norm(dim=1), torch.ones(5))


def test_resnet_stage_blocks_add_same_shape_blocks_and_keep_the_default_layout() -> None:
    torch.manual_seed(0)
    plain = create_model("resnet-s", image_size=32, width=8)
    deeper = create_model("resnet-s", image_size=32, width=8, stage_blocks=[1, 1, 2, 2])
    assert (len(plain.blocks), len(deeper.blocks)) == (4, 6)
    # The extra blocks keep their stage's width, so the embedding size is unchanged ...
    assert deeper.embedding_dim == plain.embedding_dim == 64
    extra = [b for b in deeper.blocks if isinstance(b.shortcut, nn.Identity)]
    assert [b.conv1.in_channels for b in extra] == [8, 32, 64]  # first stage's, then the two
    # ... and stage_blocks=1 is the old layout, so old checkpoints load unchanged.
    same = create_model("resnet-s", image_size=32, width=8, stage_blocks=1)
    same.load_state_dict(plain.state_dict())
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert deeper.train(False).embed(x).shape == (3, 64)


@pytest.mark.parametrize(("size", "stages"), [(4, 1), (8, 2), (28, 4), (32, 4), (64, 5)])
def test_resnet_stage_count_follows_the_image_size(size: int, stages: int) -> None:
    from latentsearch.models.resnet import stages as count

    assert count(size) == stages
    model = create_model("resnet-s", image_size=size, width=4, stage_blocks=[1] * stages)
    assert len(model.blocks) == stages


@pytest.mark.parametrize("blocks", [[1, 2], [1, 1, 0, 1], 0, [1, 1, True, 1]])
def test_resnet_refuses_stage_blocks_that_do_not_fit(blocks: object) -> None:
    with pytest.raises(LatentsearchError, match="stage_blocks"):
        create_model("resnet-s", image_size=32, width=8, stage_blocks=blocks)
