"""edgekit.stages."""
