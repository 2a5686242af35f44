"""Segmentation encoders from EO checkpoints: the first conv built for the run's bands by name.

Checkpoints are made here in each layout's shape with random weights (timm resnets: the keys
TorchGeo's SSL4EO-S12 files and torchvision/timm ImageNet files have)."""

from __future__ import annotations

import pytest
import torch

from tasks.segmentation.models import build_model
from workbench.errors import WorkbenchError
from workbench.weights import LAYOUTS

RUN = ["B02", "B03", "B04", "B08"]


def checkpoint(tmp_path, arch: str, in_chans: int, name: str = "w.pth") -> tuple:
    import timm

    torch.manual_seed(1)
    sd = timm.create_model(arch, in_chans=in_chans, pretrained=False).state_dict()
    path = tmp_path / name
    torch.save({"state_dict": sd}, path)
    return path, sd


@pytest.mark.parametrize("layout,arch,encoder", [("ssl4eo-s12-resnet18", "resnet18", "resnet18"),
                                                 ("ssl4eo-s12-resnet50", "resnet50", "resnet50"),
                                                 ("ssl4eo-s12-resnet18", "resnet18", "tu-resnet18"),
                                                 ("imagenet-rgb", "resnet18", "resnet18")])
def test_the_first_conv_takes_the_checkpoints_channels_of_the_runs_bands(tmp_path, layout, arch, encoder):
    lay = LAYOUTS[layout]
    path, sd = checkpoint(tmp_path, arch, len(lay.bands))
    model = build_model("unet", encoder, in_channels=4, encoder_weights_path=path, weight_layout=layout, bands=RUN)
    conv = model.encoder.model.conv1 if encoder.startswith("tu-") else model.encoder.conv1
    w, file_w = conv.weight.detach(), sd["conv1.weight"]
    scale = len(lay.bands) / 4
    for i, band in enumerate(RUN):
        want = file_w[:, lay.bands.index(band)] if band in lay.bands else file_w.mean(dim=1)   # RGB: no B08
        torch.testing.assert_close(w[:, i], want * scale)
    assert not torch.allclose(w[:, 0], file_w[:, 0] * scale)       # B02 is not the file's first channel
    report = model.workbench_spec["weights_report"]
    assert report["bands"]["layout"] == layout and report["bands"]["normalisation"]["mean"] == list(lay.mean)
    # the rest of the encoder is the file's
    torch.testing.assert_close(model.encoder.state_dict()[("model." if encoder.startswith("tu-") else "")
                                                          + "layer1.0.conv1.weight"], sd["layer1.0.conv1.weight"])


def test_explicit_band_order_and_unnamed_bands(tmp_path):
    path, sd = checkpoint(tmp_path, "resnet18", 3)
    model = build_model("unet", "resnet18", in_channels=2, encoder_weights_path=path,
                        weight_bands=["B08", "B04", "B03"], bands=["red", "nir"])
    torch.testing.assert_close(model.encoder.conv1.weight[:, 1].detach(), sd["conv1.weight"][:, 0] * 1.5)
    # bands without names (Blue Marble's b1 b2 b3): the positional adaptation of old, and the report says so
    model = build_model("unet", "resnet18", in_channels=3, encoder_weights_path=path,
                        weight_layout="imagenet-rgb", bands=["b1", "b2", "b3"])
    torch.testing.assert_close(model.encoder.conv1.weight.detach(), sd["conv1.weight"])
    assert "no names" in model.workbench_spec["weights_report"]["bands"]["note"]


def test_weights_whose_bands_match_none_are_refused_in_one_line(tmp_path):
    path, _ = checkpoint(tmp_path, "resnet18", 2, "sar.pth")
    with pytest.raises(WorkbenchError) as e:
        build_model("unet", "resnet18", in_channels=4, encoder_weights_path=path, weight_bands=["VV", "VH"],
                    bands=RUN)
    assert "sar.pth" in str(e.value) and "VV, VH" in str(e.value) and "B02, B03, B04, B08" in str(e.value)
    with pytest.raises(WorkbenchError, match="reads 4 input channels but the run names 3"):
        build_model("unet", "resnet18", in_channels=4, encoder_weights_path=path, weight_bands=["VV", "VH"],
                    bands=RUN[:3])
