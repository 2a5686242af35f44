"""Tile classifiers from EO checkpoints (timm models): the first layer built for the run's bands by
name, for each known layout, with checkpoints made here in its shape with random weights."""

from __future__ import annotations

import pytest
import torch

from tasks.classification.config import ModelConfig
from tasks.classification.models import build_classifier
from workbench.errors import WorkbenchError
from workbench.weights import LAYOUTS

RUN = ["B02", "B03", "B04", "B08"]
SMALL = {"depth": 1}          # one transformer block: the patch embedding is what is checked


def save(tmp_path, sd: dict, name: str = "w.pth"):
    path = tmp_path / name
    torch.save(sd, path)
    return path


@pytest.mark.parametrize("layout,name,key,kwargs", [
    ("ssl4eo-s12-resnet18", "resnet18", "conv1.weight", {}),
    ("ssl4eo-s12-vit-small", "vit_small_patch16_224", "patch_embed.proj.weight", SMALL),
    ("imagenet-rgb", "resnet18", "conv1.weight", {}),
])
def test_the_first_layer_takes_the_checkpoints_channels_of_the_runs_bands(tmp_path, layout, name, key, kwargs):
    import timm

    lay = LAYOUTS[layout]
    torch.manual_seed(2)
    sd = timm.create_model(name, in_chans=len(lay.bands), num_classes=1000, pretrained=False, **kwargs).state_dict()
    cfg = ModelConfig(name=name, weights_path=str(save(tmp_path, sd)), weight_layout=layout, kwargs=dict(kwargs))
    model = build_classifier(cfg, in_chans=4, num_classes=3, data_size=32, bands=RUN)
    w, scale = model.net.state_dict()[key], len(lay.bands) / 4
    for i, band in enumerate(RUN):
        want = sd[key][:, lay.bands.index(band)] if band in lay.bands else sd[key].mean(dim=1)
        torch.testing.assert_close(w[:, i], want * scale)
    assert not torch.allclose(w[:, 0], sd[key][:, 0] * scale)
    report = model.net.weights_report
    assert report["layout"] == layout and report["head_dropped"]          # 1000 classes -> 3
    assert model(torch.zeros(2, 4, 32, 32)).shape == (2, 3)


def test_prithvi_3d_patch_embedding_into_a_timm_vit(tmp_path):
    """Prithvi-100M's keys: a timm ViT encoder with a Conv3d patch embedding over 1-frame tubelets,
    a 3-frame position embedding, and an MAE decoder."""
    import timm

    torch.manual_seed(3)
    sd = timm.create_model("vit_base_patch16_224", in_chans=6, pretrained=False, **SMALL).state_dict()
    sd = {k: v for k, v in sd.items() if not k.startswith("head.")}
    sd["patch_embed.proj.weight"] = sd["patch_embed.proj.weight"].unsqueeze(2)          # (768, 6, 1, 16, 16)
    sd["pos_embed"] = torch.randn(1, 1 + 3 * 196, 768)
    sd["mask_token"], sd["decoder_embed.weight"] = torch.zeros(1, 1, 512), torch.zeros(512, 768)
    cfg = ModelConfig(name="vit_base_patch16_224", weights_path=str(save(tmp_path, sd, "Prithvi_100M.pt")),
                      weight_layout="prithvi-100m", kwargs=dict(SMALL))
    model = build_classifier(cfg, in_chans=4, num_classes=2, data_size=32, bands=RUN)
    w, file_w = model.net.patch_embed.proj.weight.detach(), sd["patch_embed.proj.weight"][:, :, 0]
    bands = LAYOUTS["prithvi-100m"].bands
    for i, band in enumerate(RUN):
        torch.testing.assert_close(w[:, i], file_w[:, bands.index("B8A" if band == "B08" else band)] * 6 / 4)
    assert any("B8A" in n for n in model.net.weights_report["notes"])     # B08 read through Prithvi's NIR
    assert model(torch.zeros(1, 4, 32, 32)).shape == (1, 2)


def test_unmatched_bands_and_wrong_files_are_one_line(tmp_path):
    import timm

    sd = timm.create_model("resnet18", in_chans=2, pretrained=False).state_dict()
    cfg = ModelConfig(name="resnet18", weights_path=str(save(tmp_path, sd, "sar.pth")), weight_bands=["VV", "VH"])
    with pytest.raises(WorkbenchError, match=r"sar.pth: none of the run's bands \(B02, B03, B04, B08\).*VV, VH"):
        build_classifier(cfg, 4, 3, 32, bands=RUN)
    cfg = ModelConfig(name="resnet34", weights_path=str(save(tmp_path, sd, "r18.pth")), weight_bands=["VV", "B04"])
    with pytest.raises(WorkbenchError, match="r18.pth: does not fit"):
        build_classifier(cfg, 4, 3, 32, bands=RUN)
