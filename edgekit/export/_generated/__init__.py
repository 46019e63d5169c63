"""Generated FlatBuffers bindings (see each module's header for its source). Not edited by hand."""
