"""Platform connectors: one sub-package per platform, registered as entry points."""
