"""KeyRotation: its vocabulary and plan (``model``, pure) and the reconciler that drives a
rotation one step per tick (``reconciler``)."""
