"""Generation backends behind one interface (:class:`agents.base.Backend`)."""
