"""Policies: the bandits (Vowpal Wabbit, Thompson sampling) and their baselines (uniform,
fixed, A/B test)."""
