"""A model version as a FHIR ``Device``: the software that flagged an event and drew its explanations."""

from __future__ import annotations

from fhir.resources.R4B.device import Device, DeviceDeviceName, DeviceVersion
from fhir.resources.R4B.identifier import Identifier

from server.db.tables import ModelState, ModelVersion
from server.fhir.systems import FhirSystems

MANUFACTURER = "Wardwatch"


def device_id(model_id: int) -> str:
    return f"model-version-{model_id}"


def model_device(model: ModelVersion, *, systems: FhirSystems) -> Device:
    """The checkpoint's sha256 is an identifier too: it names the exact weights, whatever the database ids."""
    return Device(
        id=device_id(model.id),
        identifier=[Identifier(system=systems.identifier("model-version"), value=str(model.id)),
                    Identifier(system=systems.identifier("checkpoint-sha256"), value=model.checkpoint_sha256)],
        status="active" if model.state == ModelState.active else "inactive",
        manufacturer=MANUFACTURER,
        deviceName=[DeviceDeviceName(name=model.name, type="model-name")],
        modelNumber=model.architecture,
        type={"text": "video event classifier (software)"},
        version=[DeviceVersion(type={"text": "model version"}, value=str(model.id))],
    )
