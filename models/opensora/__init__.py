"""Open-Sora family (v1.0 to 2.0)."""
