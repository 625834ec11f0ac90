"""Pretrained starting points: torchvision weights from a temporary hub cache, local files, clear errors.

No test touches the network: the torchvision "weights" are random tensors of the right shapes saved
under the exact file name torchvision looks for, and ``torch.hub.download_url_to_file`` fails the
test if anything tries to download.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torchvision
from torch import Tensor, nn

from model.nets import build_model
from model.pretrained import (
    HEAD_PREFIX,
    PretrainedWeightsError,
    PretrainedWeightsMissingError,
    build_pretrained_model,
    check_pretrained,
    hub_checkpoint_dir,
    hub_checkpoint_file,
    load_pretrained,
    parse_pretrained_spec,
)
from model.weights import InputSpec, save_checkpoint

# torchvision model name -> (its reference builder with the pretraining head, expected cache file name)
TORCHVISION_FILES = {
    "resnet18": (lambda: torchvision.models.resnet18(num_classes=1000), "resnet18-f37072fd.pth"),
    "resnet50": (lambda: torchvision.models.resnet50(num_classes=1000), "resnet50-11ad3fa6.pth"),
    "r3d_18": (lambda: torchvision.models.video.r3d_18(num_classes=400), "r3d_18-b3b3357e.pth"),
}


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any download attempt fails the test (torch.hub resolves this name at call time)."""

    def refuse(url: str, *args: object, **kwargs: object) -> None:
        pytest.fail(f"tried to download {url}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


def _use_hub_dir(path: Path) -> Iterator[Path]:
    """Point torch.hub at ``path`` and restore the previous setting exactly (usually None = env)."""
    old = torch.hub._hub_dir  # private, but restoring it (not get_dir()'s value) keeps TORCH_HOME live
    torch.hub.set_dir(str(path))
    try:
        yield path / "checkpoints"
    finally:
        torch.hub._hub_dir = old


@pytest.fixture(scope="module")
def filled_hub(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, Tensor]]]:
    """A hub folder holding random torchvision-shaped weights under the exact expected names (built once),
    and those weights by torchvision model name."""
    root = tmp_path_factory.mktemp("hub")
    (root / "checkpoints").mkdir()
    states: dict[str, dict[str, Tensor]] = {}
    torch.manual_seed(0)
    for name, (make, file_name) in TORCHVISION_FILES.items():
        states[name] = make().state_dict()
        torch.save(states[name], root / "checkpoints" / file_name)
    return root, states


@pytest.fixture
def hub(filled_hub: tuple[Path, dict[str, dict[str, Tensor]]]) -> Iterator[dict[str, dict[str, Tensor]]]:
    """torch.hub pointed at the filled folder for one test; yields the weights written there."""
    root, states = filled_hub
    for _ in _use_hub_dir(root):
        yield states


@pytest.fixture
def empty_hub(tmp_path: Path) -> Iterator[Path]:
    yield from _use_hub_dir(tmp_path / "empty-hub")


def _assert_backbone_equal(model: nn.Module, state: dict[str, Tensor]) -> int:
    count = 0
    for key, value in model.state_dict().items():
        if not key.startswith(HEAD_PREFIX):
            assert torch.equal(value, state[key]), key
            count += 1
    return count


def _head(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if k.startswith(HEAD_PREFIX)}


# --------------------------------------------------------------------------------------------
# Specs and cache names
# --------------------------------------------------------------------------------------------


def test_expected_cache_file_names(empty_hub: Path) -> None:
    for name, (_, file_name) in TORCHVISION_FILES.items():
        spec = parse_pretrained_spec(f"torchvision:{name}")
        assert hub_checkpoint_file(spec.weights) == empty_hub / file_name  # type: ignore[arg-type]
        assert spec.arch == name
    assert parse_pretrained_spec("torchvision:resnet50").description == "ResNet50_Weights.IMAGENET1K_V2"
    v1 = parse_pretrained_spec("torchvision:resnet50:IMAGENET1K_V1")
    assert hub_checkpoint_file(v1.weights).name == "resnet50-0676ba61.pth"  # type: ignore[arg-type]
    assert parse_pretrained_spec("torchvision:r3d_18").description == "R3D_18_Weights.KINETICS400_V1"


def test_torch_home_decides_the_cache_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert hub_checkpoint_dir() == tmp_path / "hub" / "checkpoints"


def test_file_specs_and_bad_specs() -> None:
    spec = parse_pretrained_spec(" weights/backbone.pt ")
    assert spec.path == Path("weights/backbone.pt") and spec.weights is None and spec.arch is None
    with pytest.raises(PretrainedWeightsError, match="torchvision:resnet18, torchvision:resnet50"):
        parse_pretrained_spec("torchvision:vgg16")
    with pytest.raises(PretrainedWeightsError, match="IMAGENET1K_V1"):
        parse_pretrained_spec("torchvision:resnet18:IMAGENET1K_V9")
    with pytest.raises(PretrainedWeightsError, match="empty"):
        parse_pretrained_spec("  ")


# --------------------------------------------------------------------------------------------
# torchvision weights from the hub cache
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["resnet18", "resnet50", "r3d_18"])
def test_torchvision_weights_load_from_the_cache(hub: dict[str, dict[str, Tensor]], arch: str) -> None:
    torch.manual_seed(1)
    model = build_model(arch, num_classes=3)
    head = _head(model)
    report = load_pretrained(model, f"torchvision:{arch}", arch=arch)
    loaded = _assert_backbone_equal(model, hub[arch])
    assert report.loaded_keys == loaded > 50
    assert report.skipped_head_keys == ("fc.bias", "fc.weight")
    assert report.path == str(hub_checkpoint_file(parse_pretrained_spec(f"torchvision:{arch}").weights))  # type: ignore[arg-type]
    for key, value in _head(model).items():  # the new head: untouched, still 3 classes
        assert torch.equal(value, head[key]) and value.shape[0] == 3
    assert report.as_dict()["skipped_head_keys"] == ["fc.bias", "fc.weight"]


def test_build_pretrained_model(hub: dict[str, dict[str, Tensor]]) -> None:
    model = build_pretrained_model("resnet18", num_classes=4, pretrained="torchvision:resnet18")
    _assert_backbone_equal(model, hub["resnet18"])
    assert model.fc.out_features == 4  # type: ignore[union-attr]
    assert model(torch.randn(1, 3, 2, 32, 32)).shape == (1, 4)  # clips still go through per frame
    torch.manual_seed(5)
    plain = build_pretrained_model("tiny3d", num_classes=2)
    torch.manual_seed(5)
    reference = build_model("tiny3d", num_classes=2)
    assert all(
        torch.equal(a, b) for a, b in zip(plain.state_dict().values(), reference.state_dict().values(), strict=True)
    )


def test_absent_cache_file_is_a_clear_error_and_no_download(empty_hub: Path) -> None:
    model = build_model("resnet18", num_classes=3)
    with pytest.raises(PretrainedWeightsMissingError) as caught:
        load_pretrained(model, "torchvision:resnet18", arch="resnet18")
    message = str(caught.value)
    assert "resnet18-f37072fd.pth" in message and str(empty_hub) in message
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message
    assert "TORCH_HOME" in message and "path" in message
    assert caught.value.path == empty_hub / "resnet18-f37072fd.pth"
    assert isinstance(caught.value, ValueError)
    assert not empty_hub.exists()  # not even the cache folder was created
    with pytest.raises(PretrainedWeightsMissingError, match="r3d_18-b3b3357e.pth"):
        build_pretrained_model("r3d_18", num_classes=3, pretrained="torchvision:r3d_18")


def test_allow_download_uses_torchvision_download(empty_hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A deployment with internet may allow the download; it goes through torch.hub into the cache."""
    fetched: list[str] = []
    source = torchvision.models.resnet18(num_classes=1000).state_dict()

    def fake_download(url: str, dst: str, *args: object, **kwargs: object) -> None:
        fetched.append(url)
        torch.save(source, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    model = build_model("resnet18", num_classes=2)
    load_pretrained(model, "torchvision:resnet18", arch="resnet18", allow_download=True)
    assert fetched == ["https://download.pytorch.org/models/resnet18-f37072fd.pth"]
    assert (empty_hub / "resnet18-f37072fd.pth").is_file()
    _assert_backbone_equal(model, source)


def test_failed_download_is_a_clear_error(empty_hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(url: str, *args: object, **kwargs: object) -> None:
        raise OSError("Network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(PretrainedWeightsError, match="resnet18-f37072fd.pth.*unreachable"):
        load_pretrained(
            build_model("resnet18", num_classes=2), "torchvision:resnet18", arch="resnet18", allow_download=True
        )


def test_arch_mismatch_is_a_clear_error(hub: dict[str, dict[str, Tensor]]) -> None:
    with pytest.raises(
        PretrainedWeightsError, match=r"video \(Kinetics-400\) weights for arch 'r3d_18', not 'resnet18'"
    ):
        check_pretrained("torchvision:r3d_18", arch="resnet18")
    with pytest.raises(PretrainedWeightsError, match="not 'resnet50'"):
        load_pretrained(build_model("resnet50", num_classes=2), "torchvision:resnet18", arch="resnet50")
    with pytest.raises(ValueError, match="unknown architecture"):
        check_pretrained("torchvision:resnet18", arch="vgg")


def test_corrupt_cache_file_is_a_clear_error(empty_hub: Path) -> None:
    empty_hub.mkdir(parents=True)
    (empty_hub / "resnet18-f37072fd.pth").write_bytes(b"half a download")
    with pytest.raises(PretrainedWeightsError, match="could not load torchvision:resnet18"):
        load_pretrained(build_model("resnet18", num_classes=2), "torchvision:resnet18", arch="resnet18")


# --------------------------------------------------------------------------------------------
# FILE specs
# --------------------------------------------------------------------------------------------


def test_plain_state_dict_file(tmp_path: Path, hub: dict[str, dict[str, Tensor]]) -> None:
    """A torchvision .pth copied anywhere loads as a file, head skipped; a wrapped one too."""
    path = tmp_path / "imagenet.pth"
    torch.save(hub["resnet18"], path)
    model = build_model("resnet18", num_classes=3)
    report = load_pretrained(model, str(path), arch="resnet18")
    _assert_backbone_equal(model, hub["resnet18"])
    assert report.source == "state dict" and report.path == str(path)
    backbone_only = {k: v for k, v in hub["resnet18"].items() if not k.startswith("fc.")}
    torch.save({"state_dict": backbone_only, "epoch": 3}, tmp_path / "wrapped.pt")
    report = load_pretrained(build_model("resnet18", num_classes=3), str(tmp_path / "wrapped.pt"), arch="resnet18")
    assert report.skipped_head_keys == () and report.loaded_keys == len(backbone_only)


def test_project_checkpoint_file(tmp_path: Path) -> None:
    torch.manual_seed(2)
    trained = build_model("tiny3d", num_classes=3)
    path = tmp_path / "ward_a.pt"
    save_checkpoint(path, model=trained, arch="tiny3d", class_names=["a", "b", "c"], input_spec=InputSpec())
    model = build_model("tiny3d", num_classes=5)
    head = _head(model)
    report = load_pretrained(model, str(path), arch="tiny3d")
    _assert_backbone_equal(model, trained.state_dict())
    assert report.source == "Wardwatch checkpoint (tiny3d)" and report.skipped_head_keys == ("fc.bias", "fc.weight")
    assert all(torch.equal(v, head[k]) for k, v in _head(model).items()) and model.fc.out_features == 5  # type: ignore[union-attr]
    with pytest.raises(PretrainedWeightsError, match="checkpoint of arch 'tiny3d', not 'tiny2d'"):
        load_pretrained(build_model("tiny2d", num_classes=3), str(path), arch="tiny2d")


def test_file_keys_that_do_not_fit_are_named(tmp_path: Path) -> None:
    state = build_model("tiny3d", num_classes=3).state_dict()
    wrong_shape = dict(state, **{"blocks.0.conv.weight": torch.zeros(8, 3, 3, 5, 5)})
    torch.save(wrong_shape, tmp_path / "shape.pt")
    with pytest.raises(PretrainedWeightsError, match=r"shape mismatch.*blocks\.0\.conv\.weight \(8, 3, 3, 5, 5\)"):
        load_pretrained(build_model("tiny3d", num_classes=3), str(tmp_path / "shape.pt"), arch="tiny3d")
    prefixed = {f"module.{k}": v for k, v in state.items()}  # e.g. saved from DataParallel
    torch.save(prefixed, tmp_path / "prefixed.pt")
    with pytest.raises(
        PretrainedWeightsError, match=r"missing \d+ key\(s\): blocks\.0\.bn\.bias.*unexpected"
    ) as caught:
        load_pretrained(build_model("tiny3d", num_classes=3), str(tmp_path / "prefixed.pt"), arch="tiny3d")
    assert "module.blocks.0.bn.bias" in str(caught.value) and "more)" in str(caught.value)
    torch.save(state, tmp_path / "tiny3d.pt")  # the right kind of file for the wrong network
    with pytest.raises(PretrainedWeightsError, match="does not fit architecture 'resnet18'"):
        load_pretrained(build_model("resnet18", num_classes=3), str(tmp_path / "tiny3d.pt"), arch="resnet18")


def test_unusable_files_are_clear_errors(tmp_path: Path) -> None:
    model = build_model("tiny2d", num_classes=2)
    with pytest.raises(PretrainedWeightsMissingError, match="not found"):
        load_pretrained(model, str(tmp_path / "nope.pt"), arch="tiny2d")
    (tmp_path / "text.pt").write_text("not weights")
    with pytest.raises(PretrainedWeightsError, match="could not be loaded safely"):
        load_pretrained(model, str(tmp_path / "text.pt"), arch="tiny2d")
    torch.save({"format": "wardwatch-train-state/1", "model": model.state_dict()}, tmp_path / "state.pt")
    with pytest.raises(PretrainedWeightsError, match="format 'wardwatch-train-state/1'"):
        load_pretrained(model, str(tmp_path / "state.pt"), arch="tiny2d")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(PretrainedWeightsError, match="holds no state dict"):
        load_pretrained(model, str(tmp_path / "list.pt"), arch="tiny2d")


# --------------------------------------------------------------------------------------------
# The training recipe and `wardwatch train --pretrained`
# --------------------------------------------------------------------------------------------


def test_cli_passes_pretrained_to_the_recipe(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    import model.training.demo_recipe as supervised
    from server.cli import main

    calls: list[dict[str, object]] = []
    monkeypatch.setattr(supervised, "train_demo_model", lambda out, **kw: calls.append(kw) or {"ok": True})
    assert (
        main(["train", "--out", str(tmp_path / "m.pt"), "--arch", "r3d_18", "--pretrained", "torchvision:r3d_18"]) == 0
    )
    assert calls[0]["pretrained"] == "torchvision:r3d_18" and calls[0]["arch"] == "r3d_18"
    assert "videos" not in calls[0] and "epochs" not in calls[0]  # unset options keep the recipe's defaults
    assert main(["train", "--out", str(tmp_path / "m.pt"), "--epochs", "2"]) == 0
    assert calls[1]["pretrained"] is None and calls[1]["epochs"] == 2


def test_cli_missing_weights_fail_before_training(empty_hub: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from server.cli import main

    out = tmp_path / "m.pt"
    assert main(["train", "--out", str(out), "--arch", "resnet18", "--pretrained", "torchvision:resnet18"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "resnet18-f37072fd.pth" in err and str(empty_hub) in err
    assert not out.exists()
