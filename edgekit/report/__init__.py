"""edgekit.report."""
