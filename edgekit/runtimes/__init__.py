"""edgekit.runtimes."""
