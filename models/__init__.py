"""Model math for the pack: importable without ComfyUI."""
