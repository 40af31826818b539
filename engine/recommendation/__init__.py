"""Recommending: stored recipe fits, campaign filters, and offline evaluation of recipes."""
