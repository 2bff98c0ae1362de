"""The Fluent forward protocol: message shapes, EventTime and the shared-key handshake."""
