"""Recipes: what items an email shows (popularity, SIMS item-to-item, personalize, ranking),
and the recipe commands."""
