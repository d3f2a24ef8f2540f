"""One simulated world shared by all simulated instruments."""
