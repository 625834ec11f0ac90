"""``wardwatch experiment atcon`` end to end on tiny data of all four kinds (seconds, not minutes)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from model.training.experiment import build_parser, run_cli
from model.training.toy_data import write_shapes_dataset

FAST = [
    "--arch",
    "tiny2d",
    "--seeds",
    "2",
    "--epochs",
    "2",
    "--finetune-epochs",
    "1",
    "--batch-size",
    "4",
    "--unlabelled-batch-size",
    "8",
    "--alpha",
    "2",
    "--bootstrap",
    "50",
    "--threads",
    "1",
]


@pytest.fixture(autouse=True, scope="module")
def _restore_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _run(tmp_path: Path, data: str, *extra: str) -> dict:
    out = tmp_path / "out" / "results.json"
    code = run_cli(["--data", data, "--out", str(out), "--work-dir", str(tmp_path / "work"), *FAST, *extra])
    assert code == 0
    results = json.loads(out.read_text())
    assert out.with_suffix(".md").read_text().startswith("| N / class")
    return results


def test_image_folder_with_several_n_writes_json_markdown_and_plot(tmp_path: Path) -> None:
    write_shapes_dataset(tmp_path / "shapes", classes=3, per_class=12, size=16, seed=0)
    results = _run(tmp_path, f"imagefolder:{tmp_path / 'shapes'}", "--images-per-class", "1", "2", "--control")
    assert [r["images_per_class"] for r in results["runs"]] == [1, 2]
    png = tmp_path / "out" / "results.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for run in results["runs"]:
        assert len(run["seeds"]) == 2
        for row in run["seeds"]:
            assert row["labelled"] == 3 * run["images_per_class"]
            for model in ("baseline", "atcon", "control"):
                assert 0.0 <= row[model]["macro_f1"] <= 1.0
                low, high = row[model]["macro_f1_ci"]
                assert low <= row[model]["macro_f1"] <= high
            paired = row["paired_f1"]
            assert paired["diff"] == pytest.approx(row["atcon"]["macro_f1"] - row["baseline"]["macro_f1"])
        summary = run["summary"]
        assert {"baseline", "atcon", "control", "paired_f1", "paired_f1_vs_control"} <= set(summary)
        assert len(summary["paired_f1"]["per_seed"]) == 2
    # the same held-out split for every seed and both models
    assert results["data"]["items"]["test"] == 3 * round(0.3 * 12)
    assert "miou" not in results["runs"][0]["seeds"][0]["baseline"]  # no regions in an image folder


def test_voc_reports_localisation(tmp_path: Path) -> None:
    write_shapes_dataset(tmp_path / "voc", classes=3, per_class=8, size=16, seed=1, layout="voc", max_objects=2)
    results = _run(tmp_path, f"voc:{tmp_path / 'voc'}", "--images-per-class", "2", "--image-size", "16")
    row = results["runs"][0]["seeds"][0]
    assert results["data"]["multi_label"] is True
    for model in ("baseline", "atcon"):
        assert {"miou", "pointing_game", "average_drop_100", "increase_in_confidence_15"} <= set(row[model])
        assert row[model]["pointing_trials"] > 0
    assert "paired_pointing" in results["runs"][0]["summary"]
    assert "Δ mIoU" in (tmp_path / "out" / "results.md").read_text()


def test_csv_and_video(tmp_path: Path) -> None:
    from ingest.synthetic import SynthConfig, generate

    rows = ["path,start,end,label"]
    for seed in (1, 2, 3):
        res = generate(
            tmp_path / f"v{seed}", SynthConfig(seconds=16, seed=seed, width=64, height=48, events_per_minute=8)
        )
        rows += [f"v{seed}/ward.mp4,{e.start},{e.end},{e.label}" for e in res.events]
    (tmp_path / "ann.csv").write_text("\n".join(rows) + "\n")
    data = f"csv:{tmp_path / 'ann.csv'},frames=2,fps=1,width=32,height=24,stride=1,multi_label=0"
    results = _run(tmp_path, data, "--images-per-class", "1")
    assert results["data"]["split"] == "by group"
    assert results["data"]["classes"][0] == "none"
    assert results["runs"][0]["seeds"][1]["atcon"]["history"]


def test_synthetic_ward(tmp_path: Path) -> None:
    data = (
        "synthetic:videos=2,val_videos=1,test_videos=1,seconds=12,frames=2,fps=1,width=32,height=24,"
        "video_width=64,video_height=48,events_per_minute=8,stride=1"
    )
    results = _run(tmp_path, data, "--images-per-class", "1")
    assert results["data"]["classes"] == ["none", "bed_exit", "fall", "rhythmic_movement"]
    row = results["runs"][0]["seeds"][0]
    assert "pointing_game" in row["baseline"] and "paired_miou" in results["runs"][0]["summary"]
    # baselines are cached by their own settings: a second run reuses them
    assert list((tmp_path / "work" / "baselines").glob("*.pt"))


def test_cli_flags_and_errors(tmp_path: Path) -> None:
    args = build_parser().parse_args(
        [
            "--data",
            "synthetic",
            "--arch",
            "r3d_18",
            "--images-per-class",
            "2",
            "4",
            "8",
            "--seeds",
            "5",
            "--out",
            "r.json",
        ]
    )
    assert args.images_per_class == [2, 4, 8] and args.seeds == 5 and args.mode == "alternating"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--data", "x", "--arch", "vgg"])
    assert run_cli(["--data", "nonsense:/x", "--out", str(tmp_path / "r.json"), "--threads", "1"]) == 2
    assert run_cli(["--data", "synthetic:colour=red", "--out", str(tmp_path / "r.json"), "--threads", "1"]) == 2


def test_pretrained_weights_initialise_every_model(tmp_path: Path) -> None:
    from model.nets import build_model
    from model.training.experiment_config import ExperimentConfig
    from model.training.experiment_run import _new_model, pretrained_backbone
    from model.weights import InputSpec, save_checkpoint

    torch.manual_seed(5)
    source = build_model("tiny2d", num_classes=7)
    ckpt = tmp_path / "pre.pt"
    save_checkpoint(ckpt, model=source, arch="tiny2d", class_names=[str(i) for i in range(7)], input_spec=InputSpec())
    write_shapes_dataset(tmp_path / "shapes", classes=2, per_class=6, size=16)
    config = ExperimentConfig(data="x", arch="tiny2d", pretrained=str(ckpt))

    class _Splits:  # what pretrained_backbone reads of the splits
        train = type("T", (), {"num_classes": 3})()

    state = pretrained_backbone(config, _Splits(), tmp_path)  # type: ignore[arg-type]
    assert state is not None
    model = _new_model(config, 3, seed=0, backbone=state)
    assert torch.equal(model.blocks[0].conv.weight, source.blocks[0].conv.weight)  # backbone copied
    assert model.fc.out_features == 3  # a fresh classifier for the experiment's classes
    torch.save({"not": "weights"}, tmp_path / "bad.pt")
    args = ["--data", f"imagefolder:{tmp_path / 'shapes'}", "--out", str(tmp_path / "r.json"), *FAST]
    assert run_cli([*args, "--pretrained", str(tmp_path / "bad.pt")]) == 2


def test_finished_runs_are_kept_so_more_seeds_only_train_the_new_ones(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_shapes_dataset(tmp_path / "shapes", classes=2, per_class=10, size=16, seed=3)
    data = f"imagefolder:{tmp_path / 'shapes'}"
    first = _run(tmp_path, data, "--images-per-class", "1", "--tensorboard", str(tmp_path / "tb"))
    assert list((tmp_path / "tb").glob("n1-seed0-atcon/events.out.tfevents.*"))
    caplog.clear()
    with caplog.at_level("INFO", logger="model.training"):
        more = _run(tmp_path, data, "--images-per-class", "1", "--seeds", "3")
    cached = [r.getMessage() for r in caplog.records if "finished run from cache" in r.getMessage()]
    assert len(cached) == 2  # seeds 0 and 1 from the first run; seed 2 trained now
    assert [r["seed"] for r in more["runs"][0]["seeds"]] == [0, 1, 2]
    for old, new in zip(first["runs"][0]["seeds"], more["runs"][0]["seeds"], strict=False):
        assert new["atcon"]["macro_f1"] == old["atcon"]["macro_f1"]
        assert new["paired_f1"] == old["paired_f1"]
    # another ATCON setting is another run: nothing reused but the baselines
    caplog.clear()
    with caplog.at_level("INFO", logger="model.training"):
        _run(tmp_path, data, "--images-per-class", "1", "--finetune-lr", "3e-5")
    assert not [r for r in caplog.records if "finished run from cache" in r.getMessage()]
    assert [r for r in caplog.records if "baseline from cache" in r.getMessage()]


def test_test_phase_is_registered_first_and_scored_once(tmp_path: Path) -> None:
    write_shapes_dataset(tmp_path / "shapes", classes=2, per_class=10, size=16, seed=4)
    data = f"imagefolder:{tmp_path / 'shapes'}"
    chosen = _run(tmp_path, data, "--images-per-class", "1")
    assert chosen["evaluated_on"] == "validation" and not (tmp_path / "out" / "results.registration.json").exists()
    assert chosen["runs"][0]["seeds"][0]["evaluated_on"] == "validation"
    reused = run_cli(
        [
            "--data",
            data,
            "--out",
            str(tmp_path / "out" / "t.json"),
            "--work-dir",
            str(tmp_path / "work"),
            *FAST,
            "--images-per-class",
            "1",
            "--phase",
            "test",
        ]
    )
    assert reused == 2  # seeds 0-1 were used while choosing
    final = _run(tmp_path, data, "--images-per-class", "1", "--phase", "test", "--first-seed", "10")
    registration = json.loads((tmp_path / "out" / "results.registration.json").read_text())
    assert registration["config"]["first_seed"] == 10 and registration["registered_at"]
    assert final["evaluated_on"] == "test" and [r["seed"] for r in final["runs"][0]["seeds"]] == [10, 11]
    assert final["runs"][0]["seeds"][0]["baseline"]["macro_f1"] is not None
    # the same registered configuration may resume; another one is refused
    _run(tmp_path, data, "--images-per-class", "1", "--phase", "test", "--first-seed", "10")
    code = run_cli(
        [
            "--data",
            data,
            "--out",
            str(tmp_path / "out" / "results.json"),
            "--work-dir",
            str(tmp_path / "work"),
            *FAST,
            "--images-per-class",
            "1",
            "--phase",
            "test",
            "--finetune-lr",
            "3e-5",
            "--first-seed",
            "10",
        ]
    )
    assert code == 2
