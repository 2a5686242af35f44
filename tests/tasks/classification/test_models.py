"""Classifier models: every family builds and takes a training step with 3 and 4 bands, local
weights load through timm's adapter, the vit-scratch preset has its documented shape, and the fine-tuning
schedule freezes and opens the right layers."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from tasks.classification.config import FinetuneConfig, ModelConfig, ViTConfig, load_config
from tasks.classification.finetune import StagedUnfreezing, backbone_lr_factor, open_groups, param_groups
from tasks.classification.models import build_classifier
from workbench.errors import WorkbenchError

FAMILIES = {
    "resnet50": {},
    "mobilenetv2_100": {},
    "efficientnet_b0": {},
    "vit_tiny_patch16_224": {"input_size": 32, "kwargs": {"patch_size": 8}},
    "scratch_vit": {"vit": ViTConfig(depth=2, embed_dim=32, num_heads=4, head_dim=16, head_hidden=[64])},
}


@pytest.mark.parametrize("bands", [3, 4])
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_family_trains_a_step(name, bands, one_torch_thread):
    torch.manual_seed(0)
    cfg = ModelConfig(name=name, **FAMILIES[name])
    model = build_classifier(cfg, in_chans=bands, num_classes=3, data_size=32)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(4, bands, 32, 32), torch.tensor([0, 1, 2, 1])
    model.train()
    logits = model(x)
    assert logits.shape == (4, 3)
    loss = torch.nn.functional.cross_entropy(logits, y)
    loss.backward()
    head = model.head_parameters()[0]
    before = head.detach().clone()
    opt.step()
    assert torch.isfinite(loss) and not torch.equal(before, head.detach())


def test_binary_and_other_tile_sizes(one_torch_thread):
    model = build_classifier(ModelConfig(name="resnet18"), in_chans=5, num_classes=2, data_size=48)
    assert model(torch.randn(2, 5, 48, 48)).shape == (2, 2)
    with pytest.raises(WorkbenchError, match="at least 2 classes"):
        build_classifier(ModelConfig(name="resnet18"), in_chans=3, num_classes=1, data_size=32)


def test_input_resize_feeds_the_vit_its_size(one_torch_thread):
    cfg = ModelConfig(name="vit_tiny_patch16_224", input_size=64)
    model = build_classifier(cfg, in_chans=3, num_classes=3, data_size=32)
    assert model.net.patch_embed.img_size == (64, 64)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3)


def test_vit_scratch_preset_has_its_shape():
    cfg = load_config("vit-scratch")
    model = build_classifier(cfg.model, in_chans=3, num_classes=3, data_size=64)
    net = model.net
    assert len(net.blocks) == 8 and net.patch_embed.proj.kernel_size == (8, 8)
    assert net.embed_dim == 100 and net.patch_embed.num_patches == 64
    attn = net.blocks[0].attn
    assert attn.num_heads == 8 and attn.qkv.out_features == 3 * 8 * 100    # Keras key_dim = projection
    assert net.blocks[0].mlp.fc1.out_features == 200                          # MLP units [200, 100]
    linears = [m for m in net.head if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linears] == [2048, 1024, 3]


def test_unknown_model_and_indivisible_vit_are_user_errors():
    with pytest.raises(WorkbenchError, match="not a timm model"):
        build_classifier(ModelConfig(name="resnet_999"), 3, 3, 32)
    with pytest.raises(WorkbenchError, match="patch_size 8 does not divide"):
        build_classifier(ModelConfig(name="scratch_vit", vit=ViTConfig(depth=1)), 3, 3, 36)
    with pytest.raises(WorkbenchError, match="not divisible by num_heads"):
        load_config("vit-scratch", ["model.vit.head_dim=null"])


def test_local_weights_are_adapted_to_bands_and_classes(tmp_path, one_torch_thread):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(1)
    src = timm.create_model("resnet18", pretrained=False, num_classes=1000)
    save_file(src.state_dict(), str(tmp_path / "r18.safetensors"))
    torch.save(src.state_dict(), tmp_path / "r18.pth")
    for name in ("r18.safetensors", "r18.pth"):
        model = build_classifier(ModelConfig(name="resnet18", weights_path=str(tmp_path / name)), 4, 3, 32)
        assert torch.equal(model.net.layer3[0].conv1.weight, src.layer3[0].conv1.weight)
        assert model.net.conv1.weight.shape[1] == 4 and model.net.fc.out_features == 3

    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False)
    save_file(vit.state_dict(), str(tmp_path / "vit.safetensors"))
    with pytest.raises(WorkbenchError, match="not resnet18 weights"):
        build_classifier(ModelConfig(name="resnet18", weights_path=str(tmp_path / "vit.safetensors")), 3, 3, 32)
    with pytest.raises(WorkbenchError, match="no such weights file"):
        build_classifier(ModelConfig(name="resnet18", weights_path=str(tmp_path / "missing.pth")), 3, 3, 32)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WorkbenchError, match="not a readable weights file"):
        build_classifier(ModelConfig(name="resnet18", weights_path=str(tmp_path / "junk.pth")), 3, 3, 32)


def test_staged_unfreezing_schedule():
    ft = FinetuneConfig(linear_probe_epochs=2, stage_epochs=3, warmup_epochs=2, backbone_lr_scale=0.1)
    assert [open_groups(ft, e, 5) for e in range(12)] == [0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4]
    assert [round(backbone_lr_factor(ft, e), 3) for e in range(6)] == [1.0, 1.0, 0.333, 0.667, 1.0, 0.333]
    assert open_groups(FinetuneConfig(linear_probe_epochs=1), 1, 5) == 5      # all at once after the probe
    assert open_groups(FinetuneConfig(stage_epochs=1, stages=2), 9, 5) == 2   # capped


def test_epoch_hook_freezes_the_backbone_and_its_batchnorm(one_torch_thread):
    model = build_classifier(ModelConfig(name="resnet18"), 3, 3, 32)
    ft = FinetuneConfig(linear_probe_epochs=1, stage_epochs=1, backbone_lr_scale=0.1)
    groups = param_groups(model, 1e-4, ft)
    assert {g["name"] for g in groups} == {"head", "head_no_decay", "backbone", "backbone_no_decay"}
    opt = torch.optim.AdamW([{**g, "base_lr": 1e-3} for g in groups], lr=1e-3)
    trainer = SimpleNamespace(optimizer=opt)
    hook = StagedUnfreezing(model, ft, base_backbone_lr=1e-4).on_epoch_start
    layers = model.layer_groups()
    head = model.head_parameters()
    assert len(layers) == 5       # stem, layer1..4

    model.train()
    hook(trainer, 0)              # linear probe
    assert all(p.requires_grad for p in head)
    assert not any(p.requires_grad for group in layers for p in group)
    assert not model.net.bn1.training and not model.net.layer4[0].bn1.training
    x = torch.randn(4, 3, 32, 32)
    stem_before = model.net.conv1.weight.detach().clone()
    running = model.net.bn1.running_mean.clone()
    loss = torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2, 0]))
    loss.backward()
    opt.step()
    assert torch.equal(model.net.conv1.weight, stem_before) and torch.equal(model.net.bn1.running_mean, running)

    hook(trainer, 1)              # the top stage (layer4) opens
    assert all(p.requires_grad for p in layers[-1]) and not any(p.requires_grad for p in layers[-2])
    assert model.net.layer4[0].bn1.training and not model.net.layer3[0].bn1.training
    backbone = [g for g in opt.param_groups if g["name"].startswith("backbone")]
    assert all(g["base_lr"] == pytest.approx(1e-4) for g in backbone)
