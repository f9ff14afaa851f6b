"""CogVideoX family."""
