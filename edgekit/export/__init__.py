"""edgekit.export."""
