"""Registering fine-tune candidates: a job's checkpoint always becomes a version of its own, and one that is
byte for byte a registered version (the same SHA-256) is refused instead of renaming, re-parenting or demoting
that version. Found when two deterministic fine-tune runs on the same data wrote identical files and the second
one turned the active model back into a candidate."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from model.weights import load_checkpoint, save_checkpoint
from server.db.session import session_scope
from server.db.tables import ModelState, ModelVersion
from server.services.models import DuplicateCheckpoint, register_candidate, register_checkpoint

ASSET = Path(__file__).resolve().parents[2] / "model" / "assets" / "demo_tiny3d.pt"


def test_a_candidate_identical_to_the_active_version_is_refused(factory: sessionmaker[Session],
                                                                  tmp_path: Path) -> None:
    base = load_checkpoint(ASSET, device="cpu")
    with session_scope(factory) as session:
        active_id = register_checkpoint(session=session, loaded=base, activate=True).id

    with session_scope(factory) as session, pytest.raises(DuplicateCheckpoint, match=f"model version {active_id}"):
        register_candidate(session=session, loaded=base, name="finetune-9", parent_id=active_id, metrics={})
    with session_scope(factory) as session:
        active = session.get(ModelVersion, active_id)
        assert active is not None
        assert (active.state, active.name, active.parent_id) == (ModelState.active, ASSET.stem, None)

    # the same weights with another provenance: another file, another version
    copy = tmp_path / "finetune-10.pt"
    save_checkpoint(copy, model=base.model, arch=base.arch, class_names=base.class_names,
                    input_spec=base.input_spec, metrics={"finetune": {"provenance": {"job_id": 10}}})
    with session_scope(factory) as session:
        version = register_candidate(session=session, loaded=load_checkpoint(copy, device="cpu"),
                                     name="finetune-10", parent_id=active_id, metrics={"note": 1})
        assert version.id != active_id
        assert (version.state, version.name, version.parent_id, version.metrics) == (
            ModelState.candidate, "finetune-10", active_id, {"note": 1})
    with session_scope(factory) as session:
        assert session.get(ModelVersion, active_id).state == ModelState.active  # type: ignore[union-attr]
