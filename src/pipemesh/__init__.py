"""pipemesh: a brokerless many-to-many message mesh for AI agents on named pipes."""
