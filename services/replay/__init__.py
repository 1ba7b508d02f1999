"""Replay: run a strategy's own steps over historical bars, fill with a documented model, and measure it."""
