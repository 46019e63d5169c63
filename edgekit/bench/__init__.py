"""edgekit.bench."""
