"""Shared neural building blocks: segmenters and their training loop."""
