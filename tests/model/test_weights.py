"""Checkpoints: round trip, weights_only loading, clear errors on foreign files."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from model.nets import build_model
from model.weights import CHECKPOINT_FORMAT, InputSpec, file_sha256, load_checkpoint, save_checkpoint

NAMES = ["bed_exit", "fall", "rhythmic_movement"]
SPEC = InputSpec(frames=4, sample_fps=4.0, size=(40, 32))


@pytest.mark.parametrize("arch", ["tiny3d", "tiny2d"])
def test_round_trip_gives_identical_outputs(tmp_path: Path, arch: str) -> None:
    torch.manual_seed(0)
    model = build_model(arch, num_classes=3)
    # Move BN running stats away from their defaults so a lost buffer would show.
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, 4, 32, 40))
    model.eval()
    x = torch.randn(2, 3, 4, 32, 40)
    with torch.no_grad():
        expected = model(x)
    path = tmp_path / "m.pt"
    sha = save_checkpoint(
        path,
        model=model,
        arch=arch,
        class_names=NAMES,
        input_spec=SPEC,
        metrics={"macro_f1": np.float32(0.75), "per_class": np.array([0.5, 1.0]), "note": ("a", 1), "f1": np.nan},
    )
    assert sha == file_sha256(path)
    loaded = load_checkpoint(path, device="cpu")
    assert loaded.arch == arch and loaded.class_names == NAMES and loaded.input_spec == SPEC
    assert loaded.sha256 == sha and loaded.path == str(path) and loaded.device == torch.device("cpu")
    assert not loaded.model.training
    assert loaded.metrics["macro_f1"] == pytest.approx(0.75)
    assert loaded.metrics["per_class"] == [0.5, 1.0]
    assert loaded.metrics["note"] == ["a", 1] and loaded.metrics["f1"] is None
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), expected)


def test_checkpoint_is_plain_and_loads_with_weights_only(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    save_checkpoint(path, model=build_model("tiny2d", num_classes=3), arch="tiny2d", class_names=NAMES, input_spec=SPEC)
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == CHECKPOINT_FORMAT
    assert payload["input_spec"]["size"] == [40, 32]
    assert set(payload) == {"format", "arch", "class_names", "input_spec", "metrics", "state_dict"}


def test_bad_files_raise_value_error(tmp_path: Path) -> None:
    text = tmp_path / "notes.pt"
    text.write_text("definitely not a checkpoint")
    with pytest.raises(ValueError, match="not a Wardwatch checkpoint"):
        load_checkpoint(text, device="cpu")

    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(ValueError, match="not a Wardwatch checkpoint"):
        load_checkpoint(foreign, device="cpu")

    pickled = tmp_path / "pickled.pt"  # an arbitrary pickled class: refused by weights_only
    torch.save({"format": CHECKPOINT_FORMAT, "obj": Fraction(1, 3)}, pickled)
    with pytest.raises(ValueError):
        load_checkpoint(pickled, device="cpu")

    path = tmp_path / "m.pt"
    save_checkpoint(path, model=build_model("tiny2d", num_classes=3), arch="tiny2d", class_names=NAMES, input_spec=SPEC)
    payload = torch.load(path, weights_only=True)
    payload["arch"] = "alexnet"
    torch.save(payload, path)
    with pytest.raises(ValueError, match="unknown architecture"):
        load_checkpoint(path, device="cpu")

    payload["arch"] = "tiny3d"  # tiny2d weights do not fit tiny3d
    torch.save(payload, path)
    with pytest.raises(ValueError, match="do not match"):
        load_checkpoint(path, device="cpu")

    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt", device="cpu")


def test_unstorable_metrics_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        save_checkpoint(
            tmp_path / "m.pt",
            model=build_model("tiny2d", num_classes=3),
            arch="tiny2d",
            class_names=NAMES,
            input_spec=SPEC,
            metrics={"fn": object()},
        )
    assert not list(tmp_path.iterdir())


def test_input_spec_dict_round_trip_and_validation() -> None:
    spec = InputSpec(frames=12, sample_fps=6.0, size=(96, 72), multi_label=False)
    assert InputSpec.from_dict(spec.to_dict()) == spec
    assert spec.clip_seconds == pytest.approx(2.0)
    with pytest.raises(ValueError):
        InputSpec.from_dict({"frames": 8, "fps": 4})
    with pytest.raises(ValueError):
        InputSpec(frames=0)
