"""Segmentation models: every smp architecture by name plus AttentionUNet and UNet3Plus,
any band count, the UNet3Plus output convention, local encoder weights, describe()."""

from __future__ import annotations

import pytest
import torch

from tasks.segmentation.models import (
    adapt_first_conv,
    build_model,
    describe,
    list_architectures,
    load_encoder_weights,
)
from tasks.segmentation.unet3plus import CGM_SUPPRESSED_LOGIT, UNet3Plus
from workbench.errors import WorkbenchError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


TINY = (8, 16, 32, 64, 128)  # own-encoder widths for fast tests

# Small decoders keep the CPU tests fast; they also check that kwargs reach smp.
SMP_CASES = {
    "Unet": {"decoder_channels": (32, 16, 16, 8, 8)},
    "UnetPlusPlus": {"decoder_channels": (32, 16, 16, 8, 8)},
    "MAnet": {"decoder_channels": (32, 16, 16, 8, 8), "decoder_pab_channels": 16},
    "Linknet": {},
    "FPN": {"decoder_pyramid_channels": 32, "decoder_segmentation_channels": 32},
    "PSPNet": {"psp_out_channels": 32},
    "DeepLabV3": {"decoder_channels": 32, "encoder_output_stride": 16},  # stride 8 dilations are slow on CPU
    "DeepLabV3Plus": {"decoder_channels": 32},
    "PAN": {"decoder_channels": 16},
    "UPerNet": {"decoder_channels": 32},
    "Segformer": {"decoder_segmentation_channels": 32},
}
OWN_CASES = {
    "AttentionUNet/plain": ("attention_unet", None, {"filters": TINY}),
    "AttentionUNet/resnet18": ("AttentionUNet", "resnet18", {"decoder_channels": (32, 16, 16, 8, 8)}),
    "UNet3Plus/plain": ("unet3plus", None, {"filters": TINY, "cat_channels": 8}),
    "UNet3Plus/resnet18": ("UNet3+", "resnet18", {"cat_channels": 8}),
}


def _main(y):
    return y["out"] if isinstance(y, dict) else y


def _check_arch(arch, encoder, kwargs, size=64):
    for in_channels in (3, 4, 13):
        for classes in (1, 3):
            model = build_model(arch, encoder, in_channels=in_channels, classes=classes, **kwargs).eval()
            with torch.no_grad():
                y = model(torch.randn(2, in_channels, size, size))
            assert torch.is_tensor(y), arch
            assert y.shape == (2, classes, size, size), (arch, in_channels, classes)
            assert torch.isfinite(y).all()
    # one training step: finite gradients everywhere something was used
    model = build_model(arch, encoder, in_channels=4, classes=3, **kwargs).train()
    y = _main(model(torch.randn(2, 4, size, size)))
    y.float().logsumexp(dim=1).mean().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("arch", sorted(SMP_CASES))
def test_smp_architecture_builds_forwards_and_backwards(arch):
    _check_arch(arch, "resnet18", SMP_CASES[arch], size=128 if arch == "PAN" else 64)  # PAN needs >= 128 px


@pytest.mark.parametrize("case", sorted(OWN_CASES))
def test_own_architecture_builds_forwards_and_backwards(case):
    arch, encoder, kwargs = OWN_CASES[case]
    _check_arch(arch, encoder, kwargs)


def test_dpt_with_a_timm_vit_encoder():
    model = build_model("DPT", "tu-test_vit", in_channels=13, classes=2, dynamic_img_size=True,
                        decoder_intermediate_channels=(16, 16, 16, 16), decoder_fusion_channels=16).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 13, 64, 64)).shape == (1, 2, 64, 64)


def test_every_smp_architecture_is_reachable_by_name():
    import segmentation_models_pytorch as smp

    names = list_architectures()
    for cls in smp.MODEL_ARCHITECTURES_MAPPING.values():
        assert cls.__name__ in names
    assert "AttentionUNet" in names and "UNet3Plus" in names
    # case-insensitive, '+' read as 'plus'
    for alias, cls_name in [("unet++", "UnetPlusPlus"), ("DEEPLABV3+", "DeepLabV3Plus"), ("fpn", "FPN"),
                            ("Attention-UNet", "AttentionUNet"), ("unet_3plus", "UNet3Plus")]:
        kwargs = {"filters": TINY} if cls_name == "AttentionUNet" else {}
        kwargs = {"filters": TINY, "cat_channels": 4} if cls_name == "UNet3Plus" else kwargs
        enc = None if cls_name in ("AttentionUNet", "UNet3Plus") else "resnet18"
        assert type(build_model(alias, enc, **kwargs)).__name__ == cls_name


def test_unet3plus_train_dict_and_eval_tensor():
    model = build_model("unet3plus", None, in_channels=4, classes=3, filters=TINY, cat_channels=8)
    x = torch.randn(2, 4, 64, 64)
    model.train()
    out = model(x)
    assert set(out) == {"out", "aux", "cls"}
    assert out["out"].shape == (2, 3, 64, 64)
    assert len(out["aux"]) == 4 and all(a.shape == (2, 3, 64, 64) for a in out["aux"])
    assert out["cls"].shape == (2, 1)
    model.eval()
    with torch.no_grad():
        y = model(x)
        full = model.forward_all(x)
    assert torch.is_tensor(y) and y.shape == (2, 3, 64, 64)
    assert torch.equal(y, model.gate(full["out"], full["cls"]))


def test_unet3plus_options_without_aux_and_cgm():
    model = UNet3Plus(3, 1, encoder=None, filters=TINY[:4], cat_channels=4, deep_supervision=False, cgm=False)
    out = model.train()(torch.randn(2, 3, 32, 32))
    assert out["aux"] == [] and out["cls"] is None and out["out"].shape == (2, 1, 32, 32)


@pytest.mark.parametrize("classes", [1, 3])
def test_unet3plus_cgm_gates_eval_output(classes):
    model = UNet3Plus(3, classes, encoder=None, filters=TINY, cat_channels=4).eval()
    x = torch.randn(2, 3, 64, 64)
    conv = model.cgm[1]
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.fill_(100.0)  # "foreground present": nothing suppressed
        ungated = model.forward_all(x)["out"]
        assert torch.equal(model(x), ungated)
        conv.bias.fill_(-100.0)  # "empty tile": every foreground channel suppressed
        y = model(x)
    if classes == 1:
        assert torch.all(y == CGM_SUPPRESSED_LOGIT)
        assert torch.sigmoid(y).max() < 1e-6
    else:
        assert torch.equal(y[:, 0], ungated[:, 0])  # background kept
        assert torch.all(y[:, 1:] == CGM_SUPPRESSED_LOGIT)
        assert torch.all(y.argmax(1) == 0)


def test_unet3plus_preset_configuration_resnet50():
    # the unet3plus preset: ResNet50 backbone, 32-channel full-scale branches (160 fused)
    model = build_model("unet3plus", "resnet50", in_channels=4, classes=2, cat_channels=32)
    assert model.levels == 5
    assert model.decoder[0].fuse[0].out_channels == 160
    out = model.train()(torch.randn(2, 4, 64, 64))
    assert len(out["aux"]) == 4 and out["out"].shape == (2, 2, 64, 64)


def test_attention_gate_coefficients_in_unit_interval():
    model = build_model("attentionunet", None, in_channels=3, classes=1, filters=TINY).eval()
    x = torch.randn(1, 3, 32, 32)
    feats = model.encoder(x)[1:]
    block = model.decoder[0]
    alpha = block.gate.attention(feats[-2], feats[-1])
    assert alpha.shape == (1, 1, *feats[-2].shape[-2:])
    assert alpha.min() >= 0 and alpha.max() <= 1


@pytest.mark.parametrize("arch,encoder,kwargs", [
    ("attentionunet", None, {"filters": TINY}),
    ("unet3plus", "resnet18", {"cat_channels": 8}),
    ("unet", "resnet18", {"decoder_channels": (32, 16, 16, 8, 8)}),
])
def test_channels_last_forward_matches(arch, encoder, kwargs):
    model = build_model(arch, encoder, in_channels=4, classes=2, **kwargs).eval()
    x = torch.randn(2, 4, 64, 64)
    with torch.no_grad():
        ref = model(x)
        model = model.to(memory_format=torch.channels_last)
        y = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-4)


def test_input_size_must_fit_the_encoder():
    model = build_model("unet3plus", None, in_channels=3, classes=1, filters=TINY, cat_channels=4)
    with pytest.raises(WorkbenchError, match="multiples of 16"):
        model(torch.randn(1, 3, 40, 40))
    with pytest.raises(WorkbenchError, match="4 input bands"):
        build_model("attentionunet", None, in_channels=4, filters=TINY)(torch.randn(1, 3, 32, 32))


# ----------------------------------------------------------------------------- errors


def test_unknown_architecture_lists_close_matches():
    with pytest.raises(WorkbenchError, match="unknown segmentation architecture 'Unett'.*Unet"):
        build_model("Unett")


def test_unknown_encoder_lists_close_matches():
    with pytest.raises(WorkbenchError, match="unknown encoder 'resnet19'.*resnet18"):
        build_model("unet", "resnet19")
    with pytest.raises(WorkbenchError, match="unknown encoder 'resnet19'.*resnet18"):
        build_model("unet3plus", "resnet19")
    with pytest.raises(WorkbenchError, match="unknown timm encoder 'tu-convnxt_tiny'.*tu-convnext_tiny"):
        build_model("fpn", "tu-convnxt_tiny")


def test_bad_options_are_workbench_errors():
    with pytest.raises(WorkbenchError, match="offline"):
        build_model("unet", "resnet18", encoder_weights="imagenet")
    with pytest.raises(WorkbenchError, match="bad option for Unet"):
        build_model("unet", "resnet18", decoder_chanels=(8, 8, 8, 8, 8))
    with pytest.raises(WorkbenchError, match="in_channels"):
        build_model("unet", "resnet18", in_channels=0)
    with pytest.raises(WorkbenchError, match="needs an smp encoder"):
        build_model("fpn", None)


# ----------------------------------------------------------------------------- weights files


def _save(state, path):
    if str(path).endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return path


def _assert_same(a: dict, b: dict):
    assert set(a) == set(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_encoder_weights_round_trip_own_encoder(tmp_path, suffix):
    src = build_model("attentionunet", None, in_channels=4, classes=1, filters=TINY)
    path = _save(src.encoder.state_dict(), tmp_path / f"enc{suffix}")
    dst = build_model("attentionunet", None, in_channels=4, classes=1, filters=TINY, encoder_weights_path=path)
    _assert_same(dst.encoder.state_dict(), src.encoder.state_dict())
    assert dst.workbench_spec["weights_report"]["loaded"] == len(src.encoder.state_dict())
    assert describe(dst)["encoder_weights_path"] == str(path)


def test_encoder_weights_backbone_checkpoint_with_head_and_wrapper(tmp_path):
    # a torchvision-style ResNet18 state dict: encoder keys plus the classifier 'fc', inside {"state_dict": ...}
    src = build_model("unet", "resnet18", decoder_channels=(32, 16, 16, 8, 8))
    state = dict(src.encoder.state_dict())
    state["fc.weight"] = torch.randn(1000, 512)
    state["fc.bias"] = torch.randn(1000)
    path = _save({"state_dict": state, "epoch": 3}, tmp_path / "resnet18.pth")
    dst = build_model("unet3plus", "resnet18", cat_channels=8, encoder_weights_path=path)
    _assert_same(dst.encoder.state_dict(), src.encoder.state_dict())
    assert dst.workbench_spec["weights_report"]["ignored"] == ["fc.bias", "fc.weight"]


def test_encoder_weights_from_whole_model_and_timm_backbone(tmp_path):
    src = build_model("fpn", "resnet18")
    path = _save(src.state_dict(), tmp_path / "model.safetensors")  # keys 'encoder.*' + 'decoder.*' + ...
    dst = build_model("unet", "resnet18", encoder_weights_path=path)
    _assert_same(dst.encoder.state_dict(), src.encoder.state_dict())

    import timm

    backbone = timm.create_model("resnet18", pretrained=False)  # keys 'conv1.weight', ..., 'fc.*'
    path = _save(backbone.state_dict(), tmp_path / "timm_resnet18.pth")
    dst = build_model("unet", "tu-resnet18", encoder_weights_path=path)
    torch.testing.assert_close(dst.encoder.state_dict()["model.conv1.weight"], backbone.state_dict()["conv1.weight"],
                               rtol=0, atol=0)


@pytest.mark.parametrize("in_channels", [1, 2, 4, 13])
def test_three_band_weights_adapt_first_conv(tmp_path, in_channels):
    src = build_model("unet", "resnet18", in_channels=3)
    w3 = src.encoder.conv1.weight.detach().clone()
    path = _save(src.encoder.state_dict(), tmp_path / "rgb.safetensors")
    dst = build_model("unet", "resnet18", in_channels=in_channels, encoder_weights_path=path)
    w = dst.encoder.conv1.weight.detach()
    assert w.shape == (64, in_channels, 7, 7)
    if in_channels == 1:
        expected = w3.sum(dim=1, keepdim=True)
    else:
        expected = torch.stack([w3[:, i % 3] for i in range(in_channels)], dim=1) * (3 / in_channels)
    torch.testing.assert_close(w, expected)
    torch.testing.assert_close(adapt_first_conv(w3, in_channels), expected)
    assert dst.workbench_spec["weights_report"]["adapted"] == ["conv1.weight"]
    # every other tensor is loaded unchanged
    for k, v in src.encoder.state_dict().items():
        if k != "conv1.weight":
            assert torch.equal(dst.encoder.state_dict()[k], v), k


def test_bad_weights_files_name_the_file(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(WorkbenchError, match="nope.pth"):
        build_model("unet", "resnet18", encoder_weights_path=missing)

    wrong_keys = _save({"foo.weight": torch.zeros(3)}, tmp_path / "wrong_keys.safetensors")
    with pytest.raises(WorkbenchError, match=r"wrong_keys\.safetensors.*missing"):
        build_model("unet", "resnet18", encoder_weights_path=wrong_keys)

    state = dict(build_model("unet", "resnet18").encoder.state_dict())
    state["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    wrong_shape = _save(state, tmp_path / "wrong_shape.pth")
    with pytest.raises(WorkbenchError, match=r"wrong_shape\.pth.*layer1\.0\.conv1\.weight"):
        build_model("unet", "resnet18", encoder_weights_path=wrong_shape)

    resnet34 = _save(build_model("unet", "resnet34").encoder.state_dict(), tmp_path / "resnet34.pth")
    with pytest.raises(WorkbenchError, match=r"resnet34\.pth.*unknown keys"):
        build_model("unet", "resnet18", encoder_weights_path=resnet34)

    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a weights file")
    with pytest.raises(WorkbenchError, match="garbage.safetensors"):
        build_model("unet", "resnet18", encoder_weights_path=garbage)

    not_tensors = tmp_path / "config.pth"
    torch.save({"lr": 0.1, "epochs": 3}, not_tensors)
    with pytest.raises(WorkbenchError, match="config.pth"):
        load_encoder_weights(build_model("unet", "resnet18"), not_tensors)


def test_describe():
    model = build_model("attentionunet", None, in_channels=4, classes=2, filters=TINY)
    info = describe(model)
    assert info["class"] == "AttentionUNet" and info["in_channels"] == 4 and info["classes"] == 2
    assert info["params"] == sum(p.numel() for p in model.parameters())
    assert info["trainable_params"] == info["params"]
    assert 0 < info["encoder_params"] < info["params"]
    assert info["size_mb"] > 0
    assert "dict" in describe(build_model("unet3plus", None, filters=TINY, cat_channels=4))["outputs"]
    assert describe(build_model("linknet", "resnet18"))["encoder"] == "resnet18"


# --------------------------------------------------------------------------- refinement head


def test_refine_head_starts_as_the_model_and_keeps_its_encoder():
    torch.manual_seed(0)
    model = build_model("unet", "resnet18", in_channels=4, classes=2, refine=8).eval()
    x = torch.randn(2, 4, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), model.base(x))     # zero-initialised last conv: no change yet
    assert model.encoder is model.base.encoder
    assert model.workbench_spec["refine"] == 8
    assert describe(model)["encoder_params"] == sum(p.numel() for p in model.base.encoder.parameters())


def test_refine_head_learns_a_per_pixel_rule_the_frozen_model_cannot_see():
    """The head reads each pixel at full resolution: with the model frozen, it alone learns
    'water where band 2 > band 0' on salt-and-pepper images, pixel by pixel."""
    torch.manual_seed(0)
    model = build_model("unet", "resnet18", in_channels=3, classes=1, refine=16)
    for p in model.base.parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adam(model.refine.parameters(), lr=0.02)
    for _ in range(120):
        x = torch.randn(8, 3, 32, 32)
        y = (x[:, 2:3] > x[:, 0:1]).float()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        acc = ((model(x) > 0).float() == (x[:, 2:3] > x[:, 0:1]).float()).float().mean().item()
        base_acc = ((model.base(x) > 0).float() == (x[:, 2:3] > x[:, 0:1]).float()).float().mean().item()
    assert acc > 0.95 and base_acc < 0.7, (acc, base_acc)


def test_refine_head_on_an_own_architecture_and_bad_widths():
    model = build_model("attentionunet", None, in_channels=3, classes=1, filters=TINY, refine=4)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 1, 32, 32)
    for bad in (-1, 2.5, "wide", True):
        with pytest.raises(WorkbenchError, match="refine"):
            build_model("unet", "resnet18", refine=bad)
    with pytest.raises(WorkbenchError, match="UNet3Plus"):
        build_model("unet3plus", None, filters=TINY, cat_channels=4, refine=8)
    assert not hasattr(build_model("unet", "resnet18", refine=0), "base")
