"""Pretrained weights from local files into 1- and 3-channel models (train/models/weights)."""

from __future__ import annotations

import pytest
import torch
from torchvision import models

from lineside.train.models import create_model
from lineside.train.models.weights import WeightsError, adapt_input_conv


def torchvision_file(tmp_path, builder=models.resnet18, name="resnet18.pth"):
    """A 3-channel ImageNet-style ResNet state dict with random weights, as torchvision
    saves it (fc with 1,000 classes included)."""
    torch.manual_seed(0)
    state = builder(weights=None).state_dict()
    path = tmp_path / name
    torch.save(state, path)
    return path, state


def test_a_three_channel_resnet18_file_loads_into_a_grey_unet_summed_over_rgb(tmp_path):
    path, state = torchvision_file(tmp_path)
    model = create_model("unet", encoder_name="resnet18", in_channels=1, classes=4,
                         encoder_weights=str(path))
    encoder = model.encoder.state_dict()
    assert torch.equal(encoder["conv1.weight"], state["conv1.weight"].sum(1, keepdim=True))
    assert torch.equal(encoder["layer4.1.conv2.weight"], state["layer4.1.conv2.weight"])
    assert torch.equal(encoder["bn1.running_var"], state["bn1.running_var"])
    # and a grey image gives the same first-layer response as the RGB net on R=G=B
    grey = torch.rand(1, 1, 32, 32)
    rgb_out = torch.nn.functional.conv2d(grey.repeat(1, 3, 1, 1), state["conv1.weight"])
    assert torch.allclose(torch.nn.functional.conv2d(grey, encoder["conv1.weight"]),
                          rgb_out, atol=1e-5)


def test_the_same_file_loads_into_a_three_channel_unet_unchanged(tmp_path):
    path, state = torchvision_file(tmp_path)
    model = create_model("unet", encoder_name="resnet18", in_channels=3, classes=4,
                         encoder_weights=str(path))
    assert torch.equal(model.encoder.state_dict()["conv1.weight"], state["conv1.weight"])


def test_the_classifier_takes_the_backbone_and_keeps_its_own_head(tmp_path):
    path, state = torchvision_file(tmp_path)
    fresh = create_model("classifier", in_channels=1, classes=4)
    model = create_model("classifier", in_channels=1, classes=4, encoder_weights=str(path))
    net = model.net.state_dict()
    assert torch.equal(net["conv1.weight"], state["conv1.weight"].sum(1, keepdim=True))
    assert net["fc.weight"].shape == (4, 512)  # the head is new, not ImageNet's
    assert not torch.equal(net["layer1.0.conv1.weight"], fresh.net.state_dict()[
        "layer1.0.conv1.weight"])


def test_mini_unet_takes_its_encoder_from_an_earlier_checkpoint(tmp_path):
    donor = create_model("mini_unet", in_channels=1, classes=4)
    path = tmp_path / "ckpt.pt"
    torch.save({"state_dict": donor.state_dict(), "epoch": 3}, path)  # wrapped, as saved
    model = create_model("mini_unet", in_channels=1, classes=4, encoder_weights=str(path))
    mine, theirs = model.state_dict(), donor.state_dict()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine if k.startswith("downs."))
    decoder = [k for k in mine if not k.startswith("downs.") and k.endswith("weight")]
    assert decoder and not all(torch.equal(mine[k], theirs[k]) for k in decoder)


def test_a_file_that_does_not_fit_is_one_clear_error(tmp_path):
    path, _ = torchvision_file(tmp_path, models.resnet50, "resnet50.pth")
    with pytest.raises(WeightsError) as error:
        create_model("unet", encoder_name="resnet18", in_channels=1, classes=4,
                     encoder_weights=str(path))
    message = str(error.value)
    assert "\n" not in message and "resnet50.pth" in message and "shape mismatch" in message
    with pytest.raises(WeightsError, match="does not exist"):
        create_model("unet", encoder_name="resnet18", encoder_weights=str(tmp_path / "no"))


def test_adapting_the_first_convolution_to_more_channels_keeps_the_response_scale():
    weight = torch.rand(8, 3, 3, 3)
    adapted = adapt_input_conv(weight, 6)
    assert adapted.shape == (8, 6, 3, 3)
    # a flat image of ones gives the same response as through the original
    assert torch.allclose(adapted.sum(dim=(1, 2, 3)), weight.sum(dim=(1, 2, 3)))
