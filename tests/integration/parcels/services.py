"""The participants of ship_parcel, written with the public participant API."""

from saga_app import Command, Participant, Records, Result, success

packer = Participant("packer")
shipper = Participant("shipper")


@packer.action("pack")
def pack(command: Command, records: Records) -> Result:
    records.put(command.saga_id, {"packed": True})
    return success(box=f"box-{command.saga_id}")


@packer.compensation("unpack")
def unpack(command: Command, records: Records) -> Result:
    records.put(command.saga_id, {"packed": False})
    return success()


@shipper.action("ship")
def ship(command: Command, records: Records) -> Result:
    return success(tracking=f"track-{command.saga_id}")


@shipper.compensation("recall")
def recall(command: Command, records: Records) -> Result:
    return success()
