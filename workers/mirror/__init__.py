"""The mirror worker: every object of a stamp copied, as stored, to secondary targets (``MIRROR__TARGETS``)."""
