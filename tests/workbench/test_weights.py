"""workbench.weights: first layers rebuilt for a run's bands by name, the registry of known files."""

from __future__ import annotations

import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.weights import LAYOUTS, adapt_first_layer, check_config, file_bands, flatten_patch_embed

S2_4 = ["B02", "B03", "B04", "B08"]


def test_each_run_band_takes_the_pretrained_channel_of_its_name():
    torch.manual_seed(0)
    w = torch.randn(8, 13, 3, 3)
    names = list(LAYOUTS["ssl4eo-s12-resnet18"].bands)
    out, report = adapt_first_layer(w, names, ["B08", "red", "B02", "ndwi"], where="f.pth")
    scale = 13 / 4
    torch.testing.assert_close(out[:, 0], w[:, names.index("B08")] * scale, rtol=0, atol=0)
    torch.testing.assert_close(out[:, 1], w[:, names.index("B04")] * scale, rtol=0, atol=0)   # red = B04
    torch.testing.assert_close(out[:, 2], w[:, names.index("B02")] * scale, rtol=0, atol=0)
    torch.testing.assert_close(out[:, 3], w.mean(dim=1) * scale)                          # not in the file
    assert report["mean_initialised"] == ["ndwi"] and report["matched"]["red"] == "B04"
    assert not torch.equal(out[:, 2], w[:, 2] * scale)          # the file's third channel is B03, not B02


def test_no_band_in_common_is_one_line_naming_the_file_and_both_lists():
    with pytest.raises(WorkbenchError) as e:
        adapt_first_layer(torch.zeros(4, 2, 3, 3), ["VV", "VH"], S2_4, where="sar.pth")
    msg = str(e.value)
    assert "\n" not in msg and "sar.pth" in msg and "VV, VH" in msg and "B02, B03, B04, B08" in msg
    with pytest.raises(WorkbenchError, match="3 input channels"):
        adapt_first_layer(torch.zeros(4, 3, 3, 3), ["VV", "VH"], S2_4, where="x.pth")


def test_prithvi_patch_embedding_becomes_a_2d_one_of_one_frame():
    sd = {"patch_embed.proj.weight": torch.randn(16, 6, 1, 4, 4), "pos_embed": torch.randn(1, 1 + 3 * 196, 16),
          "mask_token": torch.zeros(1, 1, 8), "decoder_embed.weight": torch.zeros(8, 16)}
    out = flatten_patch_embed(sd, "patch_embed.proj.weight")
    assert out["patch_embed.proj.weight"].shape == (16, 6, 4, 4) and out["pos_embed"].shape == (1, 197, 16)
    torch.testing.assert_close(out["pos_embed"], sd["pos_embed"][:, :197])
    assert "mask_token" not in out and "decoder_embed.weight" not in out
    one = flatten_patch_embed({"patch_embed.proj.weight": torch.randn(16, 6, 2, 4, 4),
                               "pos_embed": torch.randn(1, 197, 16)}, "patch_embed.proj.weight")
    assert one["pos_embed"].shape == (1, 197, 16)                  # one frame already: untouched


def test_config_checks():
    assert file_bands("SSL4EO-S12-ResNet50")[0][8] == "B8A"
    assert file_bands(weight_bands=["B2", "b8a"])[0] == ["B02", "B8A"]
    assert file_bands() == (None, None)
    with pytest.raises(WorkbenchError, match="unknown layout 'ssl4eo'.*known: ssl4eo-s12-resnet18"):
        file_bands("ssl4eo")
    with pytest.raises(WorkbenchError, match="not both"):
        file_bands("imagenet-rgb", ["B04"])
    with pytest.raises(WorkbenchError, match="set model.weights_path too"):
        check_config("imagenet-rgb", None, None, "model.weights_path")
    check_config(None, None, None, "model.weights_path")


def test_layouts_record_their_normalisation_in_reflectance():
    assert LAYOUTS["ssl4eo-s12-vit-small"].normalisation()["std"] == [1.0] * 13     # DN / 10000
    prithvi = LAYOUTS["prithvi-100m"]
    assert prithvi.bands == ("B02", "B03", "B04", "B8A", "B11", "B12")
    assert prithvi.mean[0] == pytest.approx(0.0775229) and prithvi.std[5] == pytest.approx(0.1154506)
