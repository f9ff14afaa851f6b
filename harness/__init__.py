"""Headless runner: runs the workflow JSON users share, the way ComfyUI's frontend and server would."""
