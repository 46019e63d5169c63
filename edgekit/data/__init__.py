"""edgekit.data."""
