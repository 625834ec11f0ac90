"""Model versions: register a checkpoint file, find the active one."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from model.weights import LoadedModel
from server.db.tables import ModelState, ModelVersion
from server.services.errors import ConflictError, NotFoundError


def get_active_model(*, session: Session) -> ModelVersion | None:
    """The active model version, if any."""
    return session.scalars(
        select(ModelVersion).where(ModelVersion.state == ModelState.active).order_by(ModelVersion.id.desc())
    ).first()


def list_models(*, session: Session) -> list[ModelVersion]:
    """Every model version, newest first."""
    return list(session.scalars(select(ModelVersion).order_by(ModelVersion.id.desc())))


def activate_model(*, session: Session, model_id: int) -> ModelVersion:
    """Make ``model_id`` the active version; the previously active one is retired (and can be re-activated).

    Workers read the active version at the start of every task, so no restart is needed.
    """
    version = session.get(ModelVersion, model_id)
    if version is None:
        raise NotFoundError("model version", model_id)
    for other in session.scalars(select(ModelVersion).where(ModelVersion.state == ModelState.active)):
        if other.id != version.id:
            other.state = ModelState.retired
    version.state = ModelState.active
    session.flush()
    return version


def register_checkpoint(*, session: Session, loaded: LoadedModel, activate: bool,
                        created_by: str | None = None) -> ModelVersion:
    """Find the model version for this checkpoint (by sha256) or create it; optionally make it the active one."""
    version = _version_with_file(session, loaded.sha256)
    if version is None:
        version = _add_version(session, loaded, created_by)
    if activate:
        activate_model(session=session, model_id=version.id)
    return version


class DuplicateCheckpoint(ConflictError):
    """A candidate's checkpoint is byte for byte a registered version's."""


def register_candidate(*, session: Session, loaded: LoadedModel, name: str, parent_id: int | None,
                       metrics: dict[str, object], created_by: str | None = None) -> ModelVersion:
    """A new ``candidate`` version for a fine-tune job's checkpoint. DuplicateCheckpoint when a version with the
    same file (SHA-256) exists: an existing version (perhaps the active one) is never renamed, re-parented or
    put back to ``candidate`` by a job that happened to write the same bytes."""
    if (existing := _version_with_file(session, loaded.sha256)) is not None:
        raise DuplicateCheckpoint(f"the candidate's checkpoint is identical to model version {existing.id} "
                                  f"({existing.name}); nothing was registered")
    return _add_version(session, loaded, created_by, name=name, parent_id=parent_id, metrics=metrics)


def _version_with_file(session: Session, sha256: str) -> ModelVersion | None:
    return session.scalars(select(ModelVersion).where(ModelVersion.checkpoint_sha256 == sha256)).first()


def _add_version(session: Session, loaded: LoadedModel, created_by: str | None, *, name: str | None = None,
                 parent_id: int | None = None, metrics: dict[str, object] | None = None) -> ModelVersion:
    """A new ``candidate`` version row for ``loaded`` (flushed, with its id); by default named after the file,
    with the checkpoint's own metrics."""
    version = ModelVersion(
        name=name if name is not None else Path(loaded.path).stem,
        architecture=loaded.arch,
        class_names=list(loaded.class_names),
        input_spec=dataclasses.asdict(loaded.input_spec),
        checkpoint_path=str(loaded.path),
        checkpoint_sha256=loaded.sha256,
        metrics=metrics if metrics is not None else dict(loaded.metrics),
        parent_id=parent_id,
        state=ModelState.candidate,
        created_by=created_by,
    )
    session.add(version)
    session.flush()
    return version
