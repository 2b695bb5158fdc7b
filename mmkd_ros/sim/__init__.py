"""The synthetic dual-camera scene simulator: it writes the demo bag (it is not a reader)."""
