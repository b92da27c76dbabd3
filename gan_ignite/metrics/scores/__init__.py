"""Scores computed from features, their registry (factory) and the reference statistics (real_stats)."""
