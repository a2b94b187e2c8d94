"""Models as CNCF ModelPack artifacts: pack a directory, unpack an artifact (docs/models.md)."""
