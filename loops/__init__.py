"""The domain: models, signals, notifications, calibrations and rollups; no HTTP, no RQ."""
